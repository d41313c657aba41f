"""`python -m train.eval.picture`: the real game (top) and the dream (bottom) from one start under one script.

From a real CoinChase start (a short random context that primes the model), both play the same keys:
hold Right, then Down, then Left (`frames_per_key` frames each). Writes one PNG strip, every frame
side by side, so the rules can be checked by eye: the player goes where the keys say, one player,
one coin, one enemy, the score right.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from envs.coinchase import Action, CoinChaseEnv
from envs.dream import DreamCore
from envs.policies import RandomPersistentPolicy
from train.eval.rollouts import play_context


@dataclass
class PictureConfig:
    checkpoint: str = ""              # causal frame-wise checkpoint dir; "" = the bundled one
    out: str = "docs/dream_vs_real.png"
    keys: list[str] = field(default_factory=lambda: ["RIGHT", "DOWN", "LEFT"])   # Action names, held in turn
    frames_per_key: int = 6
    seed: int = 3                     # the real start (episode seed and context policy)
    scale: int = 2                    # screen pixels per game pixel
    chase_prob: float = 0.0           # the real enemy wanders (as in train.eval)


def strips(cfg: PictureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Real and dreamed frames after each key, (F, H, W, 3) uint8 each, the last context frame first."""
    core = DreamCore(cfg.checkpoint or None, 1)
    env = CoinChaseEnv(chase_prob=cfg.chase_prob, lethal=False)
    rng = np.random.default_rng(cfg.seed)
    context_len = core.model.start_frames.shape[1]
    episode_seed = cfg.seed
    policy = RandomPersistentPolicy(core.n_actions, 1, 6, rng)
    while (context := play_context(env, policy, rng, context_len, core.n_actions, episode_seed)) is None:
        episode_seed += 7_919
    frames, actions, obs, _ = context
    core.reset_rows(np.array([0]), [cfg.seed], np.stack(frames)[None], np.asarray(actions, np.int64)[None])
    real, dream = [obs], [obs]
    for name in cfg.keys:
        for _ in range(cfg.frames_per_key):
            action = int(Action[name])
            real.append(env.step(action)[0])
            dream.append(core.step(np.array([action])).frames[0])
    return np.stack(real), np.stack(dream)


def main(cfg: PictureConfig) -> Path:
    real, dream = strips(cfg)
    gap = np.full((real.shape[1], 2, 3), 255, np.uint8)
    rows = [np.concatenate([x for frame in frames for x in (frame, gap)], axis=1) for frames in (real, dream)]
    picture = np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]], axis=0)
    picture = cv2.resize(picture, None, fx=cfg.scale, fy=cfg.scale, interpolation=cv2.INTER_NEAREST)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), picture[..., ::-1])
    print(f"wrote {out}: real (top) and dream (bottom), keys {cfg.keys} x {cfg.frames_per_key} frames")
    return out


if __name__ == "__main__":
    from train.common.cli import hydra_main

    hydra_main("picture", PictureConfig, main)
