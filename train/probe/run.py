"""`python -m train.probe`: train the state probe (train.probe.model.Probe) on real CoinChase frames.

Real frames of random and coin-seeker play, with the player cell and score from `info`; a tenth held
out; the trained probe is written to `out` (safetensors + JSON) and read back by train.eval.

    python -m train.probe                       # trains, prints held-out accuracy, writes runs/coinchase/probe
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from envs.coinchase import CELLS, SCORE_DIGITS, CoinChaseEnv
from envs.policies import make_policy
from train.probe.model import Probe, save_probe


@dataclass
class ProbeConfig:
    out: str = "runs/coinchase/probe"
    frames: int = 20_000          # real frames to learn from (a tenth held out)
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    seed: int = 0


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
    return {"player_acc": float((got_players == players).all(1).mean()),
            "score_acc": float((got_scores == scores).mean())}


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
        loss = (F.cross_entropy(cell_logits, cells[idx])
                + F.cross_entropy(digit_logits.flatten(0, 1), digits[idx].flatten()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (1 - step / cfg.steps)
        optimizer.step()
    probe.eval()
    return probe, accuracy(probe, frames[val], players[val], scores[val])


def main(cfg: ProbeConfig) -> dict[str, float]:
    probe, metrics = train(cfg)
    path = save_probe(probe, cfg.out, metrics)
    print(f"probe -> {path}; held-out accuracy: player {metrics['player_acc']:.4f}, score {metrics['score_acc']:.4f}",
          f"(config {asdict(cfg)})")
    return metrics

