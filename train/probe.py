"""The state probe: a small conv net that reads the player cell and the score from any CoinChase frame.

Trained on real frames (random and coin-seeker play, ground truth from `info`), it turns generated
frames into game state, so evaluations can measure controllability (player position error) and
score consistency. Stored as safetensors + JSON (no pickle).

    python -m train.probe                       # trains, prints held-out accuracy, writes runs/coinchase/probe
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from envs.coinchase import CELLS, SCORE_DIGITS, CoinChaseEnv
from envs.policies import make_policy
from train.cli import hydra_main
from worldmodel.checkpoint import write_dir_atomically


@dataclass
class ProbeConfig:
    out: str = "runs/coinchase/probe"
    frames: int = 20_000          # real frames to learn from (10 % held out)
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    seed: int = 0


class Probe(nn.Module):
    """(N, 64, 64, 3) uint8 -> player-cell logits (N, CELLS*CELLS) and score-digit logits (N, SCORE_DIGITS, 10)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.SiLU(),
                                  nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.SiLU())        # (N, 2w, 8, 8)
        self.player = nn.Conv2d(2 * width, 1, 1)                                              # a logit per cell
        self.score = nn.Linear(2 * width * CELLS, SCORE_DIGITS * 10)                          # reads the top row

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h = self.body(x)
        return self.player(h).flatten(1), self.score(h[:, :, 0].flatten(1)).view(-1, SCORE_DIGITS, 10)

    @torch.no_grad()
    def read(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Player (N, 2) (row, col) and score (N,) read from uint8 frames (N, 64, 64, 3)."""
        cell_logits, digit_logits = self(torch.from_numpy(np.ascontiguousarray(frames)))
        cell = cell_logits.argmax(1).numpy()
        digits = digit_logits.argmax(2).numpy()                                               # (N, D) most significant first
        score = (digits * 10 ** np.arange(SCORE_DIGITS - 1, -1, -1)).sum(1)
        return np.stack([cell // CELLS, cell % CELLS], 1), score


def real_frames(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n frames of real play (half random, half coin seeker): frames, player cells (n, 2), scores (n,)."""
    env, rng = CoinChaseEnv(), np.random.default_rng(seed)
    frames, players, scores = [], [], []
    episode = 0
    while len(frames) < n:
        policy = make_policy("seeker" if episode % 2 else "random", 5, rng)
        obs, info = env.reset(seed=seed * 1_000_003 + episode)
        policy.reset(rng)
        done = False
        while not done and len(frames) < n:
            frames.append(obs), players.append(info["player"]), scores.append(info["score"] % 10 ** SCORE_DIGITS)
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            done = terminated or truncated
        episode += 1
    return np.stack(frames), np.asarray(players, np.int64), np.asarray(scores, np.int64)


def digit_targets(scores: np.ndarray) -> np.ndarray:
    return np.stack([(scores // 10 ** p) % 10 for p in range(SCORE_DIGITS - 1, -1, -1)], 1)


def accuracy(probe: Probe, frames: np.ndarray, players: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    got_players, got_scores = probe.read(frames)
    return {"player_acc": float((got_players == players).all(1).mean()), "score_acc": float((got_scores == scores).mean())}


def train(cfg: ProbeConfig) -> tuple[Probe, dict[str, float]]:
    torch.manual_seed(cfg.seed)
    frames, players, scores = real_frames(cfg.frames, cfg.seed)
    held = max(len(frames) // 10, 1)
    order = np.random.default_rng(cfg.seed).permutation(len(frames))
    val, tr = order[:held], order[held:]
    probe = Probe(cfg.width)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=cfg.lr)
    cells = torch.from_numpy(players[:, 0] * CELLS + players[:, 1])
    digits = torch.from_numpy(digit_targets(scores))
    generator = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.steps):
        idx = torch.from_numpy(tr)[torch.randint(len(tr), (cfg.batch_size,), generator=generator)]
        cell_logits, digit_logits = probe(torch.from_numpy(frames[idx.numpy()]))
        loss = F.cross_entropy(cell_logits, cells[idx]) + F.cross_entropy(digit_logits.flatten(0, 1), digits[idx].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (1 - step / cfg.steps)
        optimizer.step()
    probe.eval()
    return probe, accuracy(probe, frames[val], players[val], scores[val])


def save_probe(probe: Probe, path: str | Path, metrics: dict[str, float]) -> Path:
    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(tmp / "probe.safetensors"))
        (tmp / "probe.json").write_text(json.dumps({"width": probe.width, "held_out": metrics}, indent=2))
    return write_dir_atomically(path, fill)


def load_probe(path: str | Path) -> Probe:
    path = Path(path)
    if not (path / "probe.json").is_file():
        raise FileNotFoundError(f"{path / 'probe.json'}: missing; train one with `python -m train.probe out={path}`")
    probe = Probe(int(json.loads((path / "probe.json").read_text())["width"]))
    probe.load_state_dict(load_file(str(path / "probe.safetensors")))
    return probe.eval()


def main(cfg: ProbeConfig) -> dict[str, float]:
    probe, metrics = train(cfg)
    path = save_probe(probe, cfg.out, metrics)
    print(f"probe -> {path}; held-out accuracy: player {metrics['player_acc']:.4f}, score {metrics['score_acc']:.4f}",
          f"(config {asdict(cfg)})")
    return metrics


if __name__ == "__main__":
    hydra_main("probe", ProbeConfig, main)
