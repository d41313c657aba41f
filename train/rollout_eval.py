"""Roll world models and the real game side by side from the same real starts under the same actions.

For each start: the real CoinChase is reset with a seed and played for the model's context length;
those real frames prime the model; then a random-with-persistence action sequence drives the real
game and every model for `max_horizon` frames. Frames are compared at each horizon (PSNR, palette
artifact rate) while the real episode is alive. "copy-last-frame" repeats the last context frame.
Models run through `envs.dream.DreamCore`, i.e. the env's own rollout.

    python -m train.rollout_eval checkpoints='[runs/coinchase/tf/checkpoint,runs/coinchase/df/checkpoint]'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.coinchase import CELL_PX, PALETTE, PLAYER, CoinChaseEnv
from envs.dream import DreamCore
from envs.policies import RandomPersistentPolicy
from train.cli import hydra_main
from worldmodel.metrics import palette_artifact_rate, psnr

COPY_LAST = "copy-last-frame"


@dataclass
class RolloutEvalConfig:
    checkpoints: list[str] = field(default_factory=list)   # checkpoint dirs (causal, chunk 1)
    horizons: list[int] = field(default_factory=lambda: [1, 8, 32, 128])
    starts: int = 16                  # real starts (one rollout each, batched)
    seed: int = 0
    denoise_steps: int = 4
    device: str = "cpu"
    min_repeat: int = 1               # action persistence of the evaluation policy
    max_repeat: int = 6
    chase_prob: float = 0.5           # real game's enemy behaviour (as recorded)
    out: str = ""                     # optional markdown file for the table
    probe: str = ""                   # state-probe dir (train.probe): read the player with it instead of by colour


@dataclass
class RealRollouts:
    context: np.ndarray        # (S, K, H, W, 3) uint8 frames that prime the models
    context_actions: np.ndarray  # (S, K) int64 (null id first)
    actions: np.ndarray        # (S, Hmax) int64 actions after the context
    frames: np.ndarray         # (S, Hmax, H, W, 3) uint8 real frames after each action
    alive: np.ndarray          # (S, Hmax) bool: the real episode had not ended before this frame


def play_context(env: CoinChaseEnv, policy: RandomPersistentPolicy, rng: np.random.Generator, frames: int,
                 n_actions: int, seed: int):
    """Reset with `seed` and play `frames` - 1 steps; None if the episode ends inside the context."""
    obs, info = env.reset(seed=seed)
    policy.reset(rng)
    observed, actions = [obs], [n_actions]
    for _ in range(frames - 1):
        action = policy(obs, info)
        obs, _, terminated, _, info = env.step(action)
        if terminated:
            return None
        observed.append(obs), actions.append(action)
    return observed, actions, obs, info


def real_rollouts(cfg: RolloutEvalConfig, context_frames: int, n_actions: int) -> RealRollouts:
    horizon = max(cfg.horizons)
    env = CoinChaseEnv(horizon=context_frames + horizon + 1, chase_prob=cfg.chase_prob)
    rng = np.random.default_rng(cfg.seed)
    policy = RandomPersistentPolicy(n_actions, cfg.min_repeat, cfg.max_repeat, rng)
    out = {k: [] for k in ("context", "context_actions", "actions", "frames", "alive")}
    for start in range(cfg.starts):
        seed = cfg.seed * 100_003 + start
        while (context := play_context(env, policy, rng, context_frames, n_actions, seed)) is None:
            seed += 7_919                     # the enemy caught the player inside the context: another start
        frames, actions, obs, info = context
        alive = True
        row_actions, row_frames, row_alive = [], [], []
        for _ in range(horizon):
            action = policy(obs, info)
            row_alive.append(alive)
            if alive:
                obs, _, terminated, truncated, info = env.step(action)
                alive = not (terminated or truncated)
            row_actions.append(action), row_frames.append(obs)
        out["context"].append(np.stack(frames)), out["context_actions"].append(np.array(actions))
        out["actions"].append(np.array(row_actions)), out["frames"].append(np.stack(row_frames))
        out["alive"].append(np.array(row_alive))
    return RealRollouts(**{k: np.stack(v) for k, v in out.items()})


def dream(checkpoint: str, real: RealRollouts, cfg: RolloutEvalConfig) -> np.ndarray:
    """The model's frames (S, Hmax, H, W, 3) under the real action sequences."""
    core = DreamCore(checkpoint, len(real.actions), cfg.device, denoise_steps=cfg.denoise_steps)
    core.reset_rows(np.arange(len(real.actions)), [cfg.seed + i for i in range(len(real.actions))],
                    real.context, real.context_actions)
    return np.stack([core.step(real.actions[:, h]).frames for h in range(real.actions.shape[1])], axis=1)


MISSING_PLAYER = 8.0    # position error charged when no player is drawn (the grid's largest L1 distance is 12)


def player_cells(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 2) (row, col) of the cell with most player-coloured pixels; (-1, -1) if none.

    Exact on real CoinChase frames; on generated frames each pixel takes its nearest palette colour."""
    x = frames.astype(np.int32)[..., None, :] - PALETTE.astype(np.int32)               # (N, H, W, P, 3)
    is_player = (x ** 2).sum(-1).argmin(-1) == PLAYER                                   # (N, H, W)
    n, h, w = is_player.shape
    counts = is_player.reshape(n, h // CELL_PX, CELL_PX, w // CELL_PX, CELL_PX).sum((2, 4)).reshape(n, -1)
    best = counts.argmax(1)
    cells = np.stack([best // (w // CELL_PX), best % (w // CELL_PX)], 1)
    cells[counts.max(1) < CELL_PX] = -1                                                 # fewer than a sprite row
    return cells


def position_error(generated: np.ndarray, reference: np.ndarray, reader=player_cells) -> np.ndarray:
    """L1 cell distance between the player drawn in each generated and reference frame. (N,)

    reader: frames -> (N, 2) cells, -1 where no player; the palette detector or a state probe."""
    got, want = reader(generated), reader(reference)
    error = np.abs(got - want).sum(1).astype(np.float64)
    error[(got < 0).any(1)] = MISSING_PLAYER
    return error


def score(frames: np.ndarray, real: RealRollouts, horizons: list[int], reader=player_cells) -> dict[int, dict[str, float]]:
    """PSNR, player position error and palette artifact rate at each horizon h (frame h after the
    context), over live rollouts."""
    table = {}
    for h in horizons:
        live = real.alive[:, h - 1]
        if not live.any():
            table[h] = {"psnr": float("nan"), "pos_err": float("nan"), "artifact": float("nan"), "n": 0}
            continue
        generated, reference = frames[live, h - 1], real.frames[live, h - 1]
        table[h] = {"psnr": float(np.mean(np.minimum(psnr(generated, reference), 60.0))),
                    "pos_err": float(np.mean(position_error(generated, reference, reader))),
                    "artifact": float(np.mean(palette_artifact_rate(generated, PALETTE))), "n": int(live.sum())}
    return table


def markdown(results: dict[str, dict[int, dict[str, float]]], horizons: list[int]) -> str:
    head = "| model | " + " | ".join(f"PSNR@{h} | pos err@{h} | artifact@{h}" for h in horizons) + " |"
    rule = "|---|" + "---|---|---|" * len(horizons)
    rows = [f"| {name} | " + " | ".join(f"{r[h]['psnr']:.2f} | {r[h]['pos_err']:.2f} | {r[h]['artifact']:.4f}"
                                       for h in horizons) + " |"
            for name, r in results.items()]
    alive = "live rollouts per horizon: " + ", ".join(f"{h}: {next(iter(results.values()))[h]['n']}" for h in horizons)
    return "\n".join([head, rule, *rows, "", alive])


def main(cfg: RolloutEvalConfig) -> dict[str, dict[int, dict[str, float]]]:
    if not cfg.checkpoints:
        raise ValueError("give at least one checkpoint: checkpoints='[path,...]'")
    first = DreamCore(cfg.checkpoints[0], 1, cfg.device)
    real = real_rollouts(cfg, first.model.start_frames.shape[1], first.n_actions)
    copy_last = np.repeat(real.context[:, -1:], real.actions.shape[1], axis=1)
    reader = player_cells
    if cfg.probe:
        from train.probe import load_probe

        probe = load_probe(cfg.probe)
        reader = lambda frames: probe.read(frames)[0]  # noqa: E731
    results = {COPY_LAST: score(copy_last, real, cfg.horizons, reader)}
    for path in cfg.checkpoints:
        name = f"{DreamCore(path, 1, cfg.device).model.config.stage} ({Path(path).parent.name})"
        results[name] = score(dream(path, real, cfg), real, cfg.horizons, reader)
    table = markdown(results, cfg.horizons)
    print(table)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(table + "\n")
    return results


if __name__ == "__main__":
    hydra_main("rollout_eval", RolloutEvalConfig, main)
