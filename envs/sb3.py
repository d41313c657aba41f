"""Stable-Baselines3 VecEnvs of any game: its dream (one batched forward per step) and the real game.

Owns the adapter between dreamgym's envs and SB3's `VecEnv` interface and nothing else (no
training: that is train.rl). `DreamVecEnv` wraps `WorldModelVectorEnv`: N dreamed games advance in
one batched forward of the world model. `make_vec_env("real" | "dream", n, checkpoint)` builds either;
the real game is SB3's own `DummyVecEnv` over N `make_game` envs (in-process): the Gymnasium id the
checkpoint names (`dream_game`; the bundled checkpoint's game for one that names none) or `env_id=`,
its frames resized to the dream's frame size as the recorder resizes them (`ResizeFrames`), so one
policy plays both. `StepClock` times env steps alone (env frames/s, dream vs real).

    from envs.sb3 import make_vec_env
    dream = make_vec_env("dream", 16, "envs/checkpoints/coinchase", seed=0)
    real = make_vec_env("real", 16, env_id="dreamgym/Catch-v0", seed=0)

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

import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.dream import DEFAULT_CHECKPOINT
from envs.recording import check_recordable, make_env, resize_frame
from envs.world_model_env import WorldModelVectorEnv
from worldmodel.checkpoint import read_config

ENV_KINDS = ("real", "dream")


def dream_game(checkpoint: str | Path | None = None) -> tuple[str, int, int]:
    """The real game of a world-model checkpoint (None = the bundled one): its Gymnasium id, the dream's frame
    size and its action count, from config.json alone. A checkpoint that names no game (one written before
    checkpoints recorded it) plays the bundled checkpoint's game."""
    config, _ = read_config(checkpoint or DEFAULT_CHECKPOINT)
    env_id = config.env_id or read_config(DEFAULT_CHECKPOINT)[0].env_id
    return env_id, config.autoencoder.frame_size, config.dit.n_actions


class ResizeFrames(gym.ObservationWrapper):
    """A real game's RGB frames as the dream sees them: (size, size, 3) uint8, resized as the recorder resizes
    them (envs.recording.resize_frame), always a new array."""

    def __init__(self, env: gym.Env, size: int):
        check_recordable(env)
        super().__init__(env)
        self.size = size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return resize_frame(np.asarray(observation), self.size)


def _takes_horizon(env_id: str) -> bool:
    """Whether the registered constructor of `env_id` has a `horizon` argument (dreamgym's games do)."""
    try:
        entry = gym.spec(env_id).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        return "horizon" in inspect.signature(creator).parameters
    except (gym.error.Error, TypeError, ValueError, ImportError, AttributeError):
        return False


def make_game(env_id: str, frame_size: int = 64, max_episode_steps: int = 1000, **kwargs: Any) -> gym.Env:
    """The real game `env_id` (dreamgym ids, ALE ids with ale-py, any registered image env with Discrete actions)
    with frames resized to `frame_size` (ResizeFrames); episodes truncate after `max_episode_steps` steps (a game
    whose constructor takes `horizon` gets it too, so its own limit does not end them sooner)."""
    if _takes_horizon(env_id):
        kwargs.setdefault("horizon", max_episode_steps)
    return ResizeFrames(make_env(env_id, max_episode_steps=max_episode_steps, **kwargs), frame_size)


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
                 denoise_steps: int | None = None, compile: bool = False, env_id: str | None = None) -> VecEnv:
    """`n_envs` games for SB3: kind "dream" (the world model at `checkpoint`, None = the bundled one) or "real"
    (the game `env_id`; None = the one `checkpoint` names, see `dream_game`; frames resized to the checkpoint's
    frame size). Episodes truncate after `max_episode_steps` steps. `seed` seeds the first reset (env i gets
    seed + i). The dream-only arguments (device, dtype, denoise_steps, compile: torch.compile the dream's step)
    are ignored for the real game, and `env_id` for the dream."""
    if kind not in ENV_KINDS:
        raise ValueError(f"env must be one of {ENV_KINDS}, got {kind!r}")
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if kind == "real":
        own_id, frame_size, _ = dream_game(checkpoint)
        game = env_id or own_id
        env: VecEnv = DummyVecEnv([lambda: make_game(game, frame_size, max_episode_steps) for _ in range(n_envs)])
    else:
        env = DreamVecEnv(WorldModelVectorEnv(n_envs, checkpoint, denoise_steps, device, dtype,
                                              max_episode_steps=max_episode_steps, render_mode="rgb_array",
                                              compile=compile))
    if seed is not None:
        env.seed(seed)
    return env
