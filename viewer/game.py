"""The game the viewer shows: the played env, who plays it, and the real game beside a dream.

Owns building the env from a PlayConfig (`make_env`, with the `key=value` overrides checked against
its constructor) and `Game`, which resets and steps it through the public Gymnasium API only (plus
the dreamed env's public facts: denoise steps, context length) and keeps what the HUD reports
(frame index, return, episodes). Draws nothing and reads no keys: the human player is a policy fed
by the keys (viewer.keymap.HeldKeys).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers dreamgym/*)
from envs.coinchase import CoinChaseEnv
from envs.policies import Policy
from viewer.compare import Divergence, SideBySide
from viewer.config import FLAG_OWNED, PlayConfig
from viewer.overrides import check_kwargs


def make_env(config: PlayConfig) -> gym.Env:
    """The played env: the real CoinChase, or a WorldModelEnv of the checkpoint. Overrides are checked first."""
    if config.real:
        check_kwargs(CoinChaseEnv, config.env_kwargs, FLAG_OWNED)
        return gym.make("dreamgym/CoinChase-v0", **config.env_kwargs)
    from envs.dream import DEFAULT_CHECKPOINT   # imports torch: only when dreaming
    from envs.world_model_env import WorldModelEnv

    check_kwargs(WorldModelEnv, config.env_kwargs, FLAG_OWNED)
    path = Path(config.checkpoint) if config.checkpoint else DEFAULT_CHECKPOINT
    if not path.is_dir():
        where = "the bundled checkpoint" if config.checkpoint is None else "checkpoint"
        raise ValueError(f"{where} {path} does not exist: pass --checkpoint PATH to a world-model checkpoint, "
                         "or --real to play the real game")
    return WorldModelEnv(checkpoint=path, denoise_steps=config.denoise_steps, device=config.device, **config.env_kwargs)


class Game:
    """One played env: `reset()` and `step()` show one new frame each; `view()` is what to draw.

    `player(obs, info) -> action` chooses every step's action (keys or a scripted policy). With `dream`
    (the env itself when it is a WorldModelEnv, else None) the denoise steps can change and the real
    game can run beside it (`toggle_side_by_side`): then both reset to one real start and take the same
    actions. Episode k resets with `seed + k`, or a random seed when `seed` is None.
    """

    def __init__(self, env: gym.Env, player: Policy, seed: int | None, dream: Any = None):
        self.env, self.player, self.seed, self.dream = env, player, seed, dream
        self.stepper: gym.Env = env          # the env, or a recording wrapped around it
        self.seeds = np.random.default_rng(seed)
        self.twin: SideBySide | None = None  # the real game beside the dream
        self.obs: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.episodes, self.frame_index, self.episode_return = 0, 0, 0.0
        self.episode_over = False

    # ------------------------------------------------------------------ what there is to show
    @property
    def denoise_steps(self) -> int | None:
        return None if self.dream is None else self.dream.denoise_steps

    @property
    def max_denoise_steps(self) -> int | None:
        return None if self.dream is None else self.dream.max_denoise_steps

    @property
    def divergence(self) -> Divergence | None:
        return None if self.twin is None else self.twin.divergence

    def view(self) -> np.ndarray:
        """The game frames as shown (dream | real when side by side), at game resolution (H, W, 3) uint8."""
        return self.obs if self.twin is None else self.twin.view(self.obs)

    # ------------------------------------------------------------------ changes asked for by keys
    def change_denoise_steps(self, delta: int) -> str | None:
        """Denoise steps + delta, clamped to 1..max; a notice when there are none to change."""
        if self.dream is None:
            return "the real game has no denoise steps"
        self.dream.denoise_steps = min(max(self.dream.denoise_steps + delta, 1), self.dream.max_denoise_steps)
        return None

    def toggle_side_by_side(self) -> str | None:
        """Start or stop the real game beside the dream (the next reset starts both); a notice when it cannot."""
        if self.dream is None:
            return "side by side compares the dream with the real game: play without --real"
        if not SideBySide.fits(self.env):
            return "side by side needs a CoinChase checkpoint (64x64 frames, 5 actions)"
        if self.twin is None:
            self.twin = SideBySide()
        else:
            self.twin.close()
            self.twin = None
        return None

    # ------------------------------------------------------------------ frames
    def reset(self) -> None:
        seed = self.seed + self.episodes if self.seed is not None else int(self.seeds.integers(2**31))
        options = None
        if self.twin is not None:
            options, seed = self.twin.start(seed, self.dream.context_length, int(self.env.action_space.n))
        self.obs, self.info = self.stepper.reset(seed=seed, options=options)
        self.player.reset(np.random.default_rng(seed))
        if self.twin is not None:
            self.twin.compare(self.obs)
        self.episodes += 1
        self.frame_index, self.episode_return, self.episode_over = 0, 0.0, False

    def step(self) -> None:
        """One step under the player's action (the real game beside takes the same one)."""
        action = int(self.player(self.obs, self.info))
        self.obs, reward, terminated, truncated, self.info = self.stepper.step(action)
        self.episode_over = terminated or truncated
        if self.twin is not None:
            self.episode_over = self.twin.step(action) or self.episode_over
            self.twin.compare(self.obs)
        self.frame_index += 1
        self.episode_return += float(reward)

    def close(self) -> None:
        self.env.close()
        if self.twin is not None:
            self.twin.close()
