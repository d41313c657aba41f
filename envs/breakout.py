"""Breakout: a ball bounces between a paddle and a wall of bricks that vanish when hit.

Owns the game's rules, its drawing (numpy only, a fixed palette) and its Gymnasium spec (reset, step and
render come from envs.pixel_game.PixelGame); knows nothing of models. Positions are pixels (row y, column x)
of a sprite's top-left corner. The physics is integer and deterministic: the ball moves `vx` then `vy` pixels
a step, each axis on its own, and reflects off the frame's sides, the bar, bricks and the paddle; only a serve
(at the start and after a lost ball) draws from `self.np_random`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from envs.pixel_game import PADDLE_ACTIONS, PixelGame, ball_tracker, check_lives, move_paddle, paddle_deltas
from envs.pixels import MAX_LIVES, PIPS, SCORE_DIGITS, SCORE_LEFT, SCORE_TOP, bar_frame, draw_number, draw_pips

FRAME_SIZE = 64
HUD_PX = 8                       # rows 0..7: the bar with lives (left) and score (right); the ceiling below it
BALL = 2                         # the ball is a BALL x BALL square
BALL_MAX_X = FRAME_SIZE - BALL
SPEED_Y = 2                      # |vy|: pixels per step down or up
BRICK_W, BRICK_H = 8, 4          # a brick's cell; drawn one pixel smaller on the right and bottom
BRICK_COLS, BRICK_ROWS = FRAME_SIZE // BRICK_W, 4
BRICK_TOP = 16                   # rows 16..31 hold the bricks; 8..15 is open space above them
SERVE_Y = 36                     # a served ball starts here, heading down ...
SERVE_COLUMNS = (FRAME_SIZE - BALL) // 4 + 1   # ... at x = 4k, k uniform in [0, 16), vx uniform in {-1, +1}
PADDLE_W, PADDLE_H = 12, 2
PADDLE_Y = 60                    # the paddle's top row; a ball whose bottom would pass it bounces or is lost
PADDLE_STEP = 4
ACTION_MEANINGS = PADDLE_ACTIONS
PADDLE_DELTAS = paddle_deltas(PADDLE_STEP)   # pixels per action id
PADDLE_START = 24                # on the 4-pixel grid the paddle keeps: it reaches 0 and PADDLE_MAX exactly
PADDLE_MAX = FRAME_SIZE - PADDLE_W
ZONE_VX = (-2, -1, 1, 2)         # vx after a paddle bounce, by the quarter of the paddle the ball's centre hits

PALETTE = np.array(
    [
        [20, 24, 40],     # 0 floor
        [60, 200, 255],   # 1 paddle
        [250, 250, 250],  # 2 ball
        [240, 130, 40],   # 3 brick
        [0, 0, 0],        # 4 bar
        [200, 200, 120],  # 5 digits
        [230, 50, 60],    # 6 life pips
    ],
    dtype=np.uint8,
)
FLOOR, PADDLE, BALL_COLOUR, BRICK, BAR, DIGIT, PIP = range(len(PALETTE))


def bricks_under(y: int, x: int) -> tuple[slice, slice]:
    """The (rows, cols) slices of the brick grid that a ball at (y, x) overlaps (empty when it overlaps none)."""
    r0 = max((y - BRICK_TOP) // BRICK_H, 0)
    r1 = min((y + BALL - 1 - BRICK_TOP) // BRICK_H + 1, BRICK_ROWS)
    return slice(r0, max(r1, r0)), slice(x // BRICK_W, (x + BALL - 1) // BRICK_W + 1)


tracking_action = ball_tracker(BALL, PADDLE_W, PADDLE_STEP)   # a scripted player: tracks the ball


class BreakoutEnv(PixelGame):
    """Break a wall of bricks with a bouncing ball.

    ## Description
    A 64x64 frame: rows 0-7 are a black bar with the lives as red pips (left) and the score as three
    digits (right). Below, 4 rows of 8 orange bricks (8x4 cells at y=16..31), a white 2x2 ball and a
    blue 12x2 paddle at y=60. The ball moves (vx, vy) pixels a step, |vx| in {1, 2}, |vy| = 2: first along
    x, reflecting off the frame's sides, then along y, reflecting off the bar. A brick the ball would
    overlap vanishes (+1) and the ball reflects on that axis instead of moving. A ball reaching the
    paddle's row bounces up if it shares a column with the paddle (vx -2, -1, +1, +2 by the quarter of
    the paddle hit), else it is lost and served again. When the last brick is gone the wall is rebuilt
    at the next paddle bounce. Everything but the serves is deterministic given the actions.

    ## Action Space
    `Discrete(3)`: 0 NOOP, 1 LEFT (paddle 4 px left), 2 RIGHT (4 px right); the paddle stops at the edges.

    ## Observation Space
    `Box(0, 255, (64, 64, 3), uint8)`, RGB, every pixel a `PALETTE` colour.

    ## Rewards
    +1 per brick broken in the step, 0 otherwise.

    ## Starting State
    Full wall, paddle at x=24, `lives` lives, score 0, and a serve: the ball at y=36, x = 4k with k
    uniform in [0, 16), vx uniform in {-1, +1}, vy = +2, drawn from `self.np_random`.

    ## Episode End
    1. Termination: the last life is lost (the final frame shows no pip, and the next serve); with
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
    `paddle_x` int64; `ball` int64 (y, x); `velocity` int64 (vx, vy), hidden in one frame; `bricks` bool
    (4, 8); `lives`, `score` int64; `served` bool: the step lost the ball and served a new one.

    ## Version History
    v0: first release.
    """

    metadata = {**PixelGame.metadata, "render_fps": 20}

    def __init__(self, render_mode: str | None = None, horizon: int = 1000, lives: int = 3, lethal: bool = True):
        super().__init__("Breakout", len(ACTION_MEANINGS), render_mode, horizon)
        self.start_lives, self.lethal = check_lives(lives, MAX_LIVES), lethal
        self.bricks = np.ones((BRICK_ROWS, BRICK_COLS), bool)
        self.paddle_x, self.ball_y, self.ball_x, self.vx, self.vy = PADDLE_START, SERVE_Y, 0, 1, SPEED_Y
        self.lives = self.score = 0
        self.served = False

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    # ---------------------------------------------------------------- rules
    def _start(self) -> None:
        self.bricks = np.ones((BRICK_ROWS, BRICK_COLS), bool)
        self.paddle_x = PADDLE_START
        self.lives, self.score, self.served = self.start_lives, 0, False
        self._serve()

    def _advance(self, action: int) -> tuple[float, bool]:
        self.paddle_x = move_paddle(self.paddle_x, PADDLE_DELTAS[action], PADDLE_MAX)
        self.served = False
        broken = self._move_x() + self._move_y()
        self.score += broken
        return float(broken), self.lethal and self.lives == 0

    def _break(self, y: int, x: int) -> int:
        """Remove the bricks a ball at (y, x) would overlap; how many there were."""
        rows, cols = bricks_under(y, x)
        hit = int(self.bricks[rows, cols].sum())
        self.bricks[rows, cols] = False
        return hit

    def _move_x(self) -> int:
        x = self.ball_x + self.vx
        if not 0 <= x <= BALL_MAX_X:                       # reflect off the frame's side
            x = -x if x < 0 else 2 * BALL_MAX_X - x
            self.vx = -self.vx
        hit = self._break(self.ball_y, x)
        if hit:
            self.vx = -self.vx
        else:
            self.ball_x = x
        return hit

    def _move_y(self) -> int:
        y = self.ball_y + self.vy
        if y < HUD_PX:                                     # reflect off the bar
            y, self.vy = 2 * HUD_PX - y, -self.vy
        hit = self._break(y, self.ball_x)
        if hit:
            self.vy = -self.vy
            return hit
        if y + BALL > PADDLE_Y:                            # the paddle's row: bounce or lose the ball
            centre = self.ball_x + BALL // 2 - self.paddle_x
            if 0 <= centre <= PADDLE_W:
                y, self.vy = PADDLE_Y - BALL, -SPEED_Y
                self.vx = ZONE_VX[min(centre * len(ZONE_VX) // PADDLE_W, len(ZONE_VX) - 1)]
                if not self.bricks.any():
                    self.bricks[:] = True
            else:
                self.lives = max(self.lives - 1, 0)
                self.served = True
                self._serve()
                return 0
        self.ball_y = y
        return 0

    def _serve(self) -> None:
        self.ball_y, self.vy = SERVE_Y, SPEED_Y
        self.ball_x = 4 * int(self.np_random.integers(SERVE_COLUMNS))
        self.vx = (-1, 1)[int(self.np_random.integers(2))]

    def _info(self) -> dict[str, Any]:
        return {"paddle_x": np.int64(self.paddle_x), "ball": np.array([self.ball_y, self.ball_x], np.int64),
                "velocity": np.array([self.vx, self.vy], np.int64), "bricks": self.bricks.copy(),
                "lives": np.int64(self.lives), "score": np.int64(self.score), "served": self.served}

    # -------------------------------------------------------------- drawing
    def _frame(self) -> np.ndarray:
        frame = bar_frame(PALETTE[FLOOR], PALETTE[BAR], HUD_PX, FRAME_SIZE)     # (64, 64, 3)
        draw_pips(frame, self.lives, PIPS, PALETTE[PIP])
        draw_number(frame, self.score, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT, PALETTE[DIGIT])
        for r, c in zip(*np.nonzero(self.bricks), strict=True):
            y, x = BRICK_TOP + r * BRICK_H, c * BRICK_W
            frame[y:y + BRICK_H - 1, x:x + BRICK_W - 1] = PALETTE[BRICK]
        frame[PADDLE_Y:PADDLE_Y + PADDLE_H, self.paddle_x:self.paddle_x + PADDLE_W] = PALETTE[PADDLE]
        frame[self.ball_y:self.ball_y + BALL, self.ball_x:self.ball_x + BALL] = PALETTE[BALL_COLOUR]
        return frame
