"""The Gymnasium plumbing shared by the real 64x64 pixel games (CoinChase, Catch, Snake, Breakout, MinAtar).

Owns `PixelGame`, a `gym.Env` base that checks `render_mode` and `horizon`, builds the Discrete action space
and the (64, 64, 3) uint8 observation space, keeps the step count and the reset-needed flag, checks each
action, truncates at `horizon`, and renders through envs.window.FrameWindow. A game keeps only its rules
and its drawing: `_start()` sets up a new episode (drawing from `self.np_random`), `_advance(action)` plays
one step and returns (reward, terminated), `_frame()` draws the state and `_info()` describes it.
Also owns what the paddle games (Catch, Breakout) share besides: their actions, the lives argument's check,
the paddle's move and the scripted player that tracks the ball.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.window import FrameWindow

FRAME_SIZE = 64
PADDLE_ACTIONS = ("NOOP", "LEFT", "RIGHT")     # a paddle game's action ids: stay, move left, move right


def check_lives(lives: int, most: int) -> int:
    """`lives`, checked to be in [1, most] (the pips a bar has room for)."""
    if not 1 <= lives <= most:
        raise ValueError(f"lives must be in [1, {most}], got {lives}")
    return lives


def paddle_deltas(step: int) -> tuple[int, int, int]:
    """A paddle's move in pixels per PADDLE_ACTIONS id, for a paddle moving `step` pixels."""
    return 0, -step, step


def move_paddle(x: int, delta: int, most: int) -> int:
    """A paddle's column after moving `delta` pixels from column x, clamped to [0, most]."""
    return min(max(x + delta, 0), most)


def ball_tracker(ball_w: int, paddle_w: int, step: int) -> Callable[[dict[str, Any]], int]:
    """A scripted player for a paddle game whose info has "ball" (y, x) and "paddle_x": the function of
    `info` giving the PADDLE_ACTIONS id that moves the paddle's centre toward the ball's (NOOP within `step`)."""

    def tracking_action(info: dict[str, Any]) -> int:
        """A scripted player: the action that moves the paddle's centre toward the ball's (from `info`)."""
        gap = int(info["ball"][1]) + ball_w // 2 - (int(info["paddle_x"]) + paddle_w // 2)
        return 0 if abs(gap) < step else (1 if gap < 0 else 2)

    return tracking_action


class PixelGame(gym.Env):
    """A game with (64, 64, 3) uint8 RGB frames, `Discrete(n)` actions and a `horizon` of steps.

    Subclasses set `metadata` (its "render_fps"), call `super().__init__(...)` and define `_start`,
    `_advance`, `_frame` and `_info`; `reset`, `step`, `render` and `close` are the same for all of them.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(self, caption: str, actions: int, render_mode: str | None = None, horizon: int = 1000):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.render_mode, self.horizon = render_mode, horizon
        self.action_space = spaces.Discrete(actions)
        self.observation_space = spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self._window = FrameWindow(caption)
        self.steps = 0
        self._needs_reset = True

    # ------------------------------------------------------- the game's part
    def _start(self) -> None:
        """Set up a new episode's state (steps is already 0; self.np_random is seeded)."""
        raise NotImplementedError

    def _advance(self, action: int) -> tuple[float, bool]:
        """Play one step of `action` (a valid action id); (reward, terminated)."""
        raise NotImplementedError

    def _frame(self) -> np.ndarray:
        """The state drawn as a (64, 64, 3) uint8 frame."""
        raise NotImplementedError

    def _info(self) -> dict[str, Any]:
        raise NotImplementedError

    # --------------------------------------------------------- the Env's part
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.steps = 0
        self._start()
        self._needs_reset = False
        if self.render_mode == "human":
            self.render()
        return self._frame(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise gym.error.InvalidAction(
                f"action {action!r} ({type(action).__name__}) is not in the action space {self.action_space}")
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step(), and again after the episode ended")
        reward, terminated = self._advance(int(action))
        self.steps += 1
        truncated = self.steps >= self.horizon and not terminated
        self._needs_reset = terminated or truncated
        if self.render_mode == "human":
            self.render()
        return self._frame(), reward, terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        frame = self._frame()
        if self.render_mode == "rgb_array":
            return frame
        if self.render_mode == "human":
            self._window.show(frame, fps=self.metadata["render_fps"])
        return None

    def close(self) -> None:
        self._window.close()
