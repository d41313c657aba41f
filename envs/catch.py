"""Catch: a paddle catches a ball that falls 2-4 pixels a step and respawns at a random column.

Owns the game's rules, its drawing (numpy only, a fixed palette) and its Gymnasium spec; knows nothing
of models. Positions are pixels (row y, column x) of a sprite's top-left corner; nothing snaps to the
8-pixel cells a world model's autoencoder sees, so the ball and the paddle straddle cells.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.pixels import draw_number, draw_pips, number_left, pip_boxes
from envs.window import FrameWindow

FRAME_SIZE = 64
HUD_PX = 8                      # rows 0..7: the bar with lives (left) and score (right)
BALL = 4                        # the ball is a BALL x BALL square
SPAWN_Y = HUD_PX                # a new ball appears at the top of the play area ...
SPAWN_COLUMNS = (FRAME_SIZE - BALL) // BALL + 1   # ... at x = BALL * k, k uniform in [0, 16)
SPEEDS = (2, 3, 4)              # pixels per step, drawn uniformly when the ball spawns
PADDLE_W, PADDLE_H = 12, 3
PADDLE_Y = 60                   # the paddle's top row; a ball whose bottom would pass it is caught or lost
PADDLE_STEP = 3                 # pixels per LEFT / RIGHT
PADDLE_START = (FRAME_SIZE - PADDLE_W) // 2
PADDLE_MAX = FRAME_SIZE - PADDLE_W
MAX_LIVES = 5                   # pips the bar has room for
SCORE_DIGITS = 3
PIPS = pip_boxes(MAX_LIVES, top=2, left=2, size=4, pitch=6)
SCORE_TOP, SCORE_LEFT = 1, number_left(SCORE_DIGITS, FRAME_SIZE)

PALETTE = np.array(
    [
        [20, 24, 40],     # 0 floor
        [60, 200, 255],   # 1 paddle
        [255, 210, 40],   # 2 ball
        [0, 0, 0],        # 3 bar
        [250, 250, 250],  # 4 digits
        [230, 50, 60],    # 5 life pips
    ],
    dtype=np.uint8,
)
FLOOR, PADDLE, BALL_COLOUR, BAR, DIGIT, PIP = range(len(PALETTE))
ACTION_MEANINGS = ("NOOP", "LEFT", "RIGHT")
PADDLE_DELTAS = (0, -PADDLE_STEP, PADDLE_STEP)   # per action id


def move_paddle(x: int, action: int) -> int:
    """The paddle's column after `action` (clamped to the frame)."""
    return min(max(x + PADDLE_DELTAS[action], 0), PADDLE_MAX)


def overlaps_paddle(ball_x: int, paddle_x: int) -> bool:
    """Whether a ball at column ball_x shares a pixel column with a paddle at paddle_x."""
    return ball_x < paddle_x + PADDLE_W and ball_x + BALL > paddle_x


def tracking_action(info: dict[str, Any]) -> int:
    """A scripted player: the action that moves the paddle's centre toward the ball's (from `info`)."""
    gap = int(info["ball"][1]) + BALL // 2 - (int(info["paddle_x"]) + PADDLE_W // 2)
    return 0 if abs(gap) < PADDLE_STEP else (1 if gap < 0 else 2)


class CatchEnv(gym.Env):
    """Catch falling balls with a paddle.

    ## Description
    A 64x64 frame: rows 0-7 are a black bar showing the lives as red pips (left) and the score as three
    digits (right); below it a yellow 4x4 ball falls straight down, `speed` pixels per step, toward a
    blue 12x3 paddle whose top row is y=60. When the ball would pass the paddle's top row it is caught
    if it shares a pixel column with the paddle, else lost; either way a new ball appears at once at the
    top of the play area (y=8) at a random column. The paddle is deterministic given the actions; where
    and how fast each ball falls is random.

    ## Action Space
    `Discrete(3)`: 0 NOOP, 1 LEFT (paddle 3 px left), 2 RIGHT (3 px right); the paddle stops at the edges.

    ## Observation Space
    `Box(0, 255, (64, 64, 3), uint8)`, RGB, every pixel a `PALETTE` colour.

    ## Rewards
    +1 on the step a ball is caught, 0 otherwise.

    ## Starting State
    Paddle at x=26, `lives` lives, score 0, a ball at y=8, x = 4k with k uniform in [0, 16), speed
    uniform in {2, 3, 4}, all drawn from `self.np_random` (as is every respawn).

    ## Episode End
    1. Termination: the last life is lost (the final frame shows no pip, and the next ball); with
       `lethal=False` the game goes on at 0 lives.
    2. Truncation: `horizon` steps elapsed.

    ## Arguments
    | name        | type        | default | description                                   |
    |-------------|-------------|---------|-----------------------------------------------|
    | render_mode | str or None | None    | "rgb_array" returns the frame; "human" opens a pygame window |
    | horizon     | int         | 1000    | steps before `truncated` is True              |
    | lives       | int         | 3       | lives at the start, 1..5                      |
    | lethal      | bool        | True    | False: the game goes on at 0 lives (for horizons no episode survives) |

    ## Info
    `paddle_x` int64; `ball` int64 (y, x) of the ball's top-left pixel; `speed` int64 (hidden in the
    frame); `lives`, `score` int64; `caught`, `lost` bool: what the step did.

    ## Version History
    v0: first release.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(self, render_mode: str | None = None, horizon: int = 1000, lives: int = 3, lethal: bool = True):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not 1 <= lives <= MAX_LIVES:
            raise ValueError(f"lives must be in [1, {MAX_LIVES}], got {lives}")
        self.render_mode, self.horizon, self.start_lives, self.lethal = render_mode, horizon, lives, lethal
        self.action_space = spaces.Discrete(len(ACTION_MEANINGS))
        self.observation_space = spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self._window = FrameWindow("Catch")
        self.paddle_x = PADDLE_START
        self.ball_x = self.ball_y = self.speed = 0
        self.lives = self.score = self.steps = 0
        self.caught = self.lost = False
        self._needs_reset = True

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    # ---------------------------------------------------------------- rules
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.paddle_x = PADDLE_START
        self.lives, self.score, self.steps = self.start_lives, 0, 0
        self.caught = self.lost = False
        self._spawn()
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
        self.paddle_x = move_paddle(self.paddle_x, int(action))
        self.ball_y += self.speed
        self.caught = self.lost = False
        if self.ball_y + BALL > PADDLE_Y:                  # the ball reaches the paddle's row: caught or lost
            self.caught = overlaps_paddle(self.ball_x, self.paddle_x)
            self.lost = not self.caught
            self.score += int(self.caught)
            self.lives = max(self.lives - int(self.lost), 0)
            self._spawn()
        terminated = self.lethal and self.lives == 0
        self.steps += 1
        truncated = self.steps >= self.horizon and not terminated
        self._needs_reset = terminated or truncated
        if self.render_mode == "human":
            self.render()
        return self._frame(), float(self.caught), terminated, truncated, self._info()

    def _spawn(self) -> None:
        self.ball_y = SPAWN_Y
        self.ball_x = BALL * int(self.np_random.integers(SPAWN_COLUMNS))
        self.speed = SPEEDS[int(self.np_random.integers(len(SPEEDS)))]

    def _info(self) -> dict[str, Any]:
        return {"paddle_x": np.int64(self.paddle_x), "ball": np.array([self.ball_y, self.ball_x], np.int64),
                "speed": np.int64(self.speed), "lives": np.int64(self.lives), "score": np.int64(self.score),
                "caught": self.caught, "lost": self.lost}

    # -------------------------------------------------------------- drawing
    def _frame(self) -> np.ndarray:
        frame = np.empty((FRAME_SIZE, FRAME_SIZE, 3), np.uint8)         # (64, 64, 3)
        frame[:] = PALETTE[FLOOR]
        frame[:HUD_PX] = PALETTE[BAR]
        draw_pips(frame, self.lives, PIPS, PALETTE[PIP])
        draw_number(frame, self.score, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT, PALETTE[DIGIT])
        frame[PADDLE_Y:PADDLE_Y + PADDLE_H, self.paddle_x:self.paddle_x + PADDLE_W] = PALETTE[PADDLE]
        frame[self.ball_y:self.ball_y + BALL, self.ball_x:self.ball_x + BALL] = PALETTE[BALL_COLOUR]
        return frame

    def render(self) -> np.ndarray | None:
        frame = self._frame()
        if self.render_mode == "rgb_array":
            return frame
        if self.render_mode == "human":
            self._window.show(frame, fps=self.metadata["render_fps"])
        return None

    def close(self) -> None:
        self._window.close()
