"""The game the viewer shows: the played env, who plays it, and the real game beside a dream.

Owns building the env from a PlayConfig (`make_env`: a WorldModelEnv of the checkpoint, or with --real
the real game the checkpoint names, with the `key=value` overrides checked against its constructor;
`real_game`: the checkpoint's real game for Tab) and `Game`, which resets and steps it through the
public Gymnasium API only (plus the dreamed env's public facts: denoise steps, context length) and
keeps what the HUD reports (frame index, return, episodes, the last action). Draws nothing and reads
no keys: the human player is a policy fed by the keys (viewer.keymap.HeldKeys).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers dreamgym/*)
from envs.policies import Policy
from viewer.compare import Divergence, SideBySide
from viewer.config import FLAG_OWNED, PlayConfig
from viewer.overrides import check_kwargs
from viewer.realgame import BUNDLED_ENV_ID, RealGame, checkpoint_config, env_constructor, open_real_env


def checkpoint_path(config: PlayConfig) -> Path:
    """The checkpoint dir to play: --checkpoint / checkpoint=, else the bundled one; ValueError when it is missing."""
    from envs.dream import DEFAULT_CHECKPOINT   # imports torch: only for a checkpoint

    path = Path(config.checkpoint) if config.checkpoint else DEFAULT_CHECKPOINT
    if not path.is_dir():
        where = "the bundled checkpoint" if config.checkpoint is None else "checkpoint"
        raise ValueError(f"{where} {path} does not exist: pass --checkpoint PATH (or checkpoint=PATH) to a "
                         "world-model checkpoint, or --real to play the real game")
    return path


def make_env(config: PlayConfig) -> gym.Env:
    """The played env: a WorldModelEnv of the checkpoint, or with --real the real game it names, its frames at the
    checkpoint's size (without a checkpoint the bundled game, as it draws itself). Overrides are checked first."""
    if config.real:
        env_id: str = BUNDLED_ENV_ID
        frame_size: int | None = None   # no checkpoint: the bundled game's frames as it draws them
        if config.checkpoint:
            model = checkpoint_config(checkpoint_path(config))
            env_id, frame_size = model.env_id, model.autoencoder.frame_size
        try:
            if config.env_kwargs and env_id:
                check_kwargs(env_constructor(env_id), config.env_kwargs, FLAG_OWNED)
            return open_real_env(env_id, frame_size, **config.env_kwargs)
        except ValueError as error:
            game = config.checkpoint or "the bundled checkpoint"
            raise ValueError(f"--real cannot play the real game of {game}: {error}") from error
    from envs.world_model_env import WorldModelEnv

    check_kwargs(WorldModelEnv, config.env_kwargs, FLAG_OWNED)
    return WorldModelEnv(checkpoint=checkpoint_path(config), denoise_steps=config.denoise_steps, device=config.device,
                         **config.env_kwargs)


def real_game(config: PlayConfig, dream: gym.Env) -> RealGame | None:
    """The real game the dreamed checkpoint names (opened when first needed), at the dream's frame size; None with
    --real (the played env is the real game)."""
    if config.real:
        return None
    return RealGame(checkpoint_config(checkpoint_path(config)).env_id, dream.observation_space.shape[0])


class Game:
    """One played env: `reset()` and `step()` show one new frame each; `view()` is what to draw.

    `player(obs, info) -> action` chooses every step's action (keys or a scripted policy). With `dream`
    (the env itself when it is a WorldModelEnv, else None) the denoise steps can change and `real` (the
    checkpoint's real game) can run beside it (`toggle_side_by_side`): then both reset to one real start,
    primed by playing `noop`, and take the same actions. Episode k resets with `seed + k`, or a random
    seed when `seed` is None. Game closes the env and the real game.
    """

    def __init__(self, env: gym.Env, player: Policy, seed: int | None, dream: Any = None,
                 real: RealGame | None = None, noop: int = 0):
        self.env, self.player, self.seed, self.dream, self.real, self.noop = env, player, seed, dream, real, noop
        self.stepper: gym.Env = env          # the env, or a recording wrapped around it
        self.seeds = np.random.default_rng(seed)
        self.twin: SideBySide | None = None  # the real game beside the dream
        self.obs: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.action: int | None = None       # the last step's action; None since the reset
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
        if self.twin is not None:
            self.twin = None
            return None
        real = None if self.real is None else self.real.open()
        if real is None:
            return "can't show the real game: " + (self.real.reason if self.real is not None else "none given")
        misfit = SideBySide.misfit(self.env, real)
        if misfit is not None:
            return f"{self.real.env_id} cannot run beside this dream: {misfit}"
        self.twin = SideBySide(real, self.noop)
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
        self.frame_index, self.episode_return, self.episode_over, self.action = 0, 0.0, False, None

    def step(self) -> None:
        """One step under the player's action (the real game beside takes the same one)."""
        action = self.action = int(self.player(self.obs, self.info))
        self.obs, reward, terminated, truncated, self.info = self.stepper.step(action)
        self.episode_over = terminated or truncated
        if self.twin is not None:
            self.episode_over = self.twin.step(action) or self.episode_over
            self.twin.compare(self.obs)
        self.frame_index += 1
        self.episode_return += float(reward)

    def close(self) -> None:
        self.env.close()
        self.twin = None
        if self.real is not None:
            self.real.close()
