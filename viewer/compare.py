"""Comparing a dreamed game with the real one, frame by frame (the viewer's side-by-side view, Tab).

Owns the divergence metric between a dreamed and a real frame; `real_context`, which plays the
first frames of a real episode so the dream can be primed with them (`reset(options={"frames": ...,
"actions": ...})`): both then start from the same state and can be driven by the same keys; and
`SideBySide`, the checkpoint's real game that runs beside the dream (its start, its steps, the
divergence, the two frames in a row). The real env comes with its frames at the dream's size
(viewer.realgame) and is owned by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.video import side_by_side

PIXEL_MAX = 255.0
CONTEXT_SEED_TRIES = 100    # real_context tries this many seeds before giving up
GAP = 2                     # game pixels between the dream and the real frame


@dataclass(frozen=True)
class Divergence:
    """How far a dreamed frame is from the real one."""
    mae: float    # mean absolute pixel error, 0..255
    psnr: float   # peak signal-to-noise ratio in dB; inf when the frames are equal


def divergence(dream: np.ndarray, real: np.ndarray) -> Divergence:
    """Divergence of two RGB uint8 frames of one shape (H, W, 3)."""
    if dream.shape != real.shape:
        raise ValueError(f"frames to compare must have one shape, got dream {dream.shape} and real {real.shape}")
    error = dream.astype(np.float64) - real.astype(np.float64)
    mse = float(np.mean(error ** 2))
    psnr = math.inf if mse == 0.0 else 10.0 * math.log10(PIXEL_MAX ** 2 / mse)
    return Divergence(mae=float(np.mean(np.abs(error))), psnr=psnr)


def real_context(env: gym.Env, seed: int, length: int, null_action: int, noop: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any], int]:
    """Reset the real `env` with `seed` and play the `noop` action until `length` frames are seen.

    Returns frames (length, H, W, 3) uint8, actions (length,) int64 (the action before each frame,
    `null_action` for the reset frame), the last observation and info (the real game's current state),
    and the seed used: if the episode ends while the context is collected, the next seed is tried.
    """
    if length < 1:
        raise ValueError(f"context length must be >= 1, got {length}")
    for episode_seed in range(seed, seed + CONTEXT_SEED_TRIES):
        obs, info = env.reset(seed=episode_seed)
        frames, actions, ended = [obs], [null_action], False
        while len(frames) < length and not ended:
            obs, _, terminated, truncated, info = env.step(noop)
            frames.append(obs)
            actions.append(noop)
            ended = terminated or truncated
        if not ended:
            return np.stack(frames), np.asarray(actions, np.int64), obs, info, episode_seed
    raise RuntimeError(f"every real episode from seed {seed} to {seed + CONTEXT_SEED_TRIES - 1} ended within "
                       f"{length} frames; cannot prime the dream with a context of that length")


class SideBySide:
    """The real game `env` beside a dream of it: one start (the real episode's first frames prime the
    dream), the same actions, the divergence of the two frames after every reset and step. The context
    is played with the `noop` action."""

    def __init__(self, env: gym.Env, noop: int = 0) -> None:
        self.env, self.noop = env, noop
        self.obs: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.divergence: Divergence | None = None

    @staticmethod
    def misfit(dream: gym.Env, real: gym.Env) -> str | None:
        """Why `real` cannot run beside `dream` (other frame shape or action count), or None when it can."""
        if real.action_space.n != dream.action_space.n:
            return f"the real game has {real.action_space.n} actions, the dream {dream.action_space.n}"
        if real.observation_space.shape != dream.observation_space.shape:
            return (f"the real game's frames are {real.observation_space.shape}, "
                    f"the dream's {dream.observation_space.shape}")
        return None

    def start(self, seed: int, context_length: int, null_action: int) -> tuple[dict[str, np.ndarray], int]:
        """Reset the real game; returns the dream's reset options (its context frames and actions) and the
        seed used (the next one when the real episode ended within the context)."""
        frames, actions, self.obs, self.info, seed = real_context(self.env, seed, context_length, null_action,
                                                                  self.noop)
        return {"frames": frames, "actions": actions}, seed

    def step(self, action: int) -> bool:
        """Step the real game; returns whether its episode ended."""
        self.obs, _, terminated, truncated, self.info = self.env.step(action)
        return terminated or truncated

    def compare(self, dream: np.ndarray) -> Divergence:
        """The divergence of the dreamed frame from the real one; kept in `divergence`."""
        self.divergence = divergence(dream, self.obs)
        return self.divergence

    def view(self, dream: np.ndarray) -> np.ndarray:
        """The dreamed and the real frame in a row, GAP pixels apart."""
        return side_by_side([dream, self.obs], GAP)
