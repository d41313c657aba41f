"""Stable-Baselines3 VecEnvs of CoinChase: the dream (one batched forward per step) and the real game.

Owns the adapter between dreamgym's envs and SB3's `VecEnv` interface and nothing else (no
training: that is train.rl). `DreamVecEnv` wraps `WorldModelVectorEnv`: N dreamed games advance in
one batched forward of the world model. `make_vec_env("real" | "dream", n)` builds either; the real
game is SB3's own `DummyVecEnv` over N `CoinChaseEnv` (in-process; the game is numpy and cheap).
`StepClock` times env steps alone (env frames/s, dream vs real).

SB3's conventions, which differ from the Gymnasium vector env underneath:
- observations (N, 64, 64, 3) uint8, channel-last; PPO's CnnPolicy wraps the env in VecTransposeImage
  itself (it transposes the observations and the infos' terminal_observation);
- rewards (N,) float32, dones (N,) bool = terminated | truncated, infos a list of N dicts;
- a finished env resets in the SAME step: the returned observation is the new episode's first
  frame and info["terminal_observation"] the finished episode's last one, with
  info["TimeLimit.truncated"] = truncated and not terminated. `WorldModelVectorEnv` autoresets
  NEXT_STEP (the reset frame one step later, its action ignored), so the adapter re-primes finished
  rows right after the step instead, and the vector env never sees a finished row;
- `seed(s)` takes effect at the next `reset()`: env i gets s + i, as in DummyVecEnv. A dream row
  then draws its start contexts and noise seeds from its own generator exactly as a single
  `WorldModelEnv` seeded s + i does, so DreamVecEnv reproduces DummyVecEnv over N single dreamed
  envs (within the float tolerance of a batched forward).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.coinchase import CoinChaseEnv
from envs.world_model_env import WorldModelVectorEnv

ENV_KINDS = ("real", "dream")


class DreamVecEnv(VecEnv):
    """SB3 VecEnv over one `WorldModelVectorEnv`: N dreamed envs, one batched forward per step.

    `get_attr`, `set_attr` and `env_method` reach the one shared vector env: every index sees the same
    object (e.g. `set_attr("denoise_steps", 2)` changes all rows, whatever the indices).
    """

    def __init__(self, venv: WorldModelVectorEnv):
        self.venv = venv
        self.actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> VecEnvObs:
        options = self._options[0]
        if any(opts != options for opts in self._options):
            raise ValueError("DreamVecEnv resets every row with the same options; got different ones per env")
        seeds = list(self._seeds)
        obs, info = self.venv.reset(seed=seeds, options=options or None)   # (N, H, W, 3) uint8
        self.reset_infos = [{"start_index": int(index)} for index in info["start_index"]]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)   # (N,)

    def step_wait(self) -> VecEnvStepReturn:
        if self.actions is None:
            raise RuntimeError("step_wait() without step_async()")
        obs, rewards, terminated, truncated, info = self.venv.step(self.actions)
        self.actions = None
        dones = terminated | truncated                                             # (N,) bool
        infos = [{key: values[i].item() for key, values in info.items()} for i in range(self.num_envs)]
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        finished = np.flatnonzero(dones)
        if len(finished):
            for i in finished:
                infos[i]["terminal_observation"] = obs[i].copy()                   # (H, W, 3) uint8
            # SB3 wants the reset frame now; WorldModelVectorEnv would give it one step later. Re-prime the
            # finished rows at once (from each row's own generator), so the vector env sees no finished row.
            obs[finished], reset_info = self.venv.reset_rows(finished)
            for i, index in zip(finished, reset_info["start_index"], strict=True):
                self.reset_infos[i] = {"start_index": int(index)}
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # ------------------------------------------------------------------ attributes and methods
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))   # the rows are no gym.Env: nothing wraps them

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()   # (N, H, W, 3) with render_mode="rgb_array", else None
        return [None] * self.num_envs if frames is None else list(frames)


class StepClock(VecEnvWrapper):
    """Times the wrapped VecEnv's steps alone (the dream's forward or the games' updates, no policy)."""

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        self.restart()

    def restart(self) -> None:
        self.frames, self.seconds = 0, 0.0   # frames stepped, seconds spent in step_wait since restart()

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        start = time.perf_counter()
        result = self.venv.step_wait()
        self.seconds += time.perf_counter() - start
        self.frames += self.num_envs
        return result


def make_vec_env(kind: str, n_envs: int, checkpoint: str | Path | None = None, seed: int | None = None,
                 max_episode_steps: int = 1000, device: str = "cpu", dtype: str = "auto",
                 denoise_steps: int | None = None, compile: bool = False) -> VecEnv:
    """`n_envs` CoinChase games for SB3: kind "real" (the game) or "dream" (the world model at `checkpoint`,
    None = the bundled one). Episodes truncate after `max_episode_steps` steps. `seed` seeds the first reset
    (env i gets seed + i). The dream-only arguments (device, dtype, denoise_steps, compile: torch.compile the
    dream's step) are ignored for the real game."""
    if kind not in ENV_KINDS:
        raise ValueError(f"env must be one of {ENV_KINDS}, got {kind!r}")
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if kind == "real":
        env: VecEnv = DummyVecEnv([lambda: CoinChaseEnv(horizon=max_episode_steps) for _ in range(n_envs)])
    else:
        env = DreamVecEnv(WorldModelVectorEnv(n_envs, checkpoint, denoise_steps, device, dtype,
                                              max_episode_steps=max_episode_steps, render_mode="rgb_array",
                                              compile=compile))
    if seed is not None:
        env.seed(seed)
    return env
