"""Catch: a paddle catches a ball that falls 2-4 pixels a step and respawns at a random column.

Owns the game's rules, its drawing (numpy only, a fixed palette) and its Gymnasium spec (reset, step and
render come from envs.pixel_game.PixelGame); knows nothing of models. Positions are pixels (row y, column x)
of a sprite's top-left corner; nothing snaps to the 8-pixel cells a world model's autoencoder sees, so the
ball and the paddle straddle cells.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from envs.pixel_game import PADDLE_ACTIONS, PixelGame, ball_tracker, check_lives, move_paddle, paddle_deltas
from envs.pixels import MAX_LIVES, PIPS, SCORE_DIGITS, SCORE_LEFT, SCORE_TOP, bar_frame, draw_number, draw_pips

FRAME_SIZE = 64
HUD_PX = 8                      # rows 0..7: the bar with lives (left) and score (right)
BALL = 4                        # the ball is a BALL x BALL square
SPAWN_Y = HUD_PX                # a new ball appears at the top of the play area ...
SPAWN_COLUMNS = (FRAME_SIZE - BALL) // BALL + 1   # ... at x = BALL * k, k uniform in [0, 16)
SPEEDS = (2, 3, 4)              # pixels per step, drawn uniformly when the ball spawns
PADDLE_W, PADDLE_H = 12, 3
PADDLE_Y = 60                   # the paddle's top row; a ball whose bottom would pass it is caught or lost
PADDLE_STEP = 3                 # pixels per LEFT / RIGHT
ACTION_MEANINGS = PADDLE_ACTIONS
PADDLE_DELTAS = paddle_deltas(PADDLE_STEP)   # pixels per action id
PADDLE_START = (FRAME_SIZE - PADDLE_W) // 2
PADDLE_MAX = FRAME_SIZE - PADDLE_W

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


def overlaps_paddle(ball_x: int, paddle_x: int) -> bool:
    """Whether a ball at column ball_x shares a pixel column with a paddle at paddle_x."""
    return ball_x < paddle_x + PADDLE_W and ball_x + BALL > paddle_x


tracking_action = ball_tracker(BALL, PADDLE_W, PADDLE_STEP)   # a scripted player: tracks the ball


class CatchEnv(PixelGame):
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

    metadata = {**PixelGame.metadata, "render_fps": 15}

    def __init__(self, render_mode: str | None = None, horizon: int = 1000, lives: int = 3, lethal: bool = True):
        super().__init__("Catch", len(ACTION_MEANINGS), render_mode, horizon)
        self.start_lives, self.lethal = check_lives(lives, MAX_LIVES), lethal
        self.paddle_x = PADDLE_START
        self.ball_x = self.ball_y = self.speed = 0
        self.lives = self.score = 0
        self.caught = self.lost = False

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    # ---------------------------------------------------------------- rules
    def _start(self) -> None:
        self.paddle_x = PADDLE_START
        self.lives, self.score = self.start_lives, 0
        self.caught = self.lost = False
        self._spawn()

    def _advance(self, action: int) -> tuple[float, bool]:
        self.paddle_x = move_paddle(self.paddle_x, PADDLE_DELTAS[action], PADDLE_MAX)
        self.ball_y += self.speed
        self.caught = self.lost = False
        if self.ball_y + BALL > PADDLE_Y:                  # the ball reaches the paddle's row: caught or lost
            self.caught = overlaps_paddle(self.ball_x, self.paddle_x)
            self.lost = not self.caught
            self.score += int(self.caught)
            self.lives = max(self.lives - int(self.lost), 0)
            self._spawn()
        return float(self.caught), self.lethal and self.lives == 0

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
        frame = bar_frame(PALETTE[FLOOR], PALETTE[BAR], HUD_PX, FRAME_SIZE)     # (64, 64, 3)
        draw_pips(frame, self.lives, PIPS, PALETTE[PIP])
        draw_number(frame, self.score, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT, PALETTE[DIGIT])
        frame[PADDLE_Y:PADDLE_Y + PADDLE_H, self.paddle_x:self.paddle_x + PADDLE_W] = PALETTE[PADDLE]
        frame[self.ball_y:self.ball_y + BALL, self.ball_x:self.ball_x + BALL] = PALETTE[BALL_COLOUR]
        return frame
