"""The real game a checkpoint was trained on, as the viewer uses it: played with --real, shown beside the
dream (Tab), and asked for its keys and action names.

A checkpoint names its game's Gymnasium id (`worldmodel.checkpoint.read_config(path)[0].env_id`, "" when
unknown). `open_real_env` builds it with `envs.recording.make_env` (dreamgym ids, ALE ids when ale-py is
installed, any registered id), checks it has RGB frames and Discrete actions, and shows its frames at the
dream's size (`ResizedFrames`, `envs.recording.resize_frame`). `RealGame` opens it once, on first use, and
keeps why it could not (no id, not installed) for the viewer to say. `action_keys` reads what an env
offers for the key map: `get_keys_to_action()` and `get_action_meanings()`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator

from envs import BUNDLED_ENV_ID as BUNDLED_ENV_ID   # --real without a checkpoint
from envs.recording import check_recordable, make_env, resize_frame



def checkpoint_config(path: str | Path):
    """The WorldModelConfig of a checkpoint dir (ValueError, naming the file, when it cannot be read)."""
    from worldmodel.checkpoint import read_config  # imports torch: only for a checkpoint

    return read_config(path)[0]


class ResizedFrames(gym.ObservationWrapper):
    """An env's RGB frames resized to `size` x `size` (the dream's frame size)."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return resize_frame(np.asarray(observation), self.size)


def env_constructor(env_id: str) -> Callable[..., Any]:
    """What gymnasium.make(env_id) calls (the env's class), to check `key=value` overrides against."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        make_env(env_id).close()   # registers ALE's ids, or raises ValueError naming the id
        spec = gym.spec(env_id)
    entry = spec.entry_point
    return load_env_creator(entry) if isinstance(entry, str) else entry


def open_real_env(env_id: str, frame_size: int | None = None, **kwargs: Any) -> gym.Env:
    """The real game `env_id`, its frames shown at `frame_size` (None: as the game draws them); ValueError saying
    why it cannot be played."""
    if not env_id:
        raise ValueError("the checkpoint names no real game (its config.json has no env_id)")
    try:
        env = make_env(env_id, **kwargs)
    except ImportError as error:
        raise ValueError(f"{env_id} is not installed ({error})") from error
    except (ValueError, gym.error.Error) as error:
        why = str(error) if "pip install" in str(error).split(".")[0] else "no Gymnasium env of that id is registered"
        raise ValueError(f"{env_id} is not installed ({why})") from error
    try:
        check_recordable(env)
    except ValueError:
        env.close()
        raise
    if frame_size is not None and env.observation_space.shape != (frame_size, frame_size, 3):
        env = ResizedFrames(env, frame_size)
    return env


def action_meanings(env: gym.Env) -> list[str] | None:
    """The env's action names: `get_action_meanings()` (ALE's convention, dreamgym's games too), else None."""
    if env.has_wrapper_attr("get_action_meanings"):
        return [str(name) for name in env.get_wrapper_attr("get_action_meanings")()]
    return None


def action_keys(envs: Iterable[gym.Env | None]) -> tuple[dict | None, list[str] | None]:
    """The first `get_keys_to_action()` and the first action names offered by `envs` (None where none is)."""
    keys_to_action, meanings = None, None
    for env in envs:
        if env is None:
            continue
        if keys_to_action is None and env.has_wrapper_attr("get_keys_to_action"):
            keys_to_action = dict(env.get_wrapper_attr("get_keys_to_action")())
        if meanings is None:
            meanings = action_meanings(env)
    return keys_to_action, meanings


class RealGame:
    """The real game `env_id` beside a dream of `frame_size` frames, opened on first use (`open`); `reason` says
    why there is none (no id, not installed, not an image game). Closed by its owner (`close`)."""

    def __init__(self, env_id: str, frame_size: int):
        self.env_id, self.frame_size = env_id, frame_size
        self.env: gym.Env | None = None
        self.reason: str | None = None
        self.tried = False

    def open(self) -> gym.Env | None:
        if not self.tried:
            self.tried = True
            try:
                self.env = open_real_env(self.env_id, self.frame_size)
            except ValueError as error:
                self.reason = str(error)
            except Exception as error:  # noqa: BLE001  (a broken real game must not stop the dream)
                self.reason = f"{self.env_id} could not be opened ({type(error).__name__}: {error})"
        return self.env

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
