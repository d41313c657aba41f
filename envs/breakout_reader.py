"""Breakout's evaluation spec: a deterministic reader of Breakout frames and the game's rules over read states.

For evaluation only (see envs.game_spec). Every pixel takes its nearest `PALETTE` colour; a brick is
present where at least half of its 7x3 drawn pixels are brick-coloured; the ball is the 2x2 window with
the most ball pixels, the paddle the 12x2 window with the most paddle pixels; lives are the lit pips
and the score the digits. Exact on real frames (tests/test_game_spec.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from envs.breakout import (BALL, BALL_COLOUR, BRICK, BRICK_COLS, BRICK_H, BRICK_ROWS, BRICK_TOP, BRICK_W, DIGIT,
                           FRAME_SIZE, HUD_PX, PADDLE, PADDLE_DELTAS, PADDLE_H, PADDLE_MAX, PADDLE_W, PADDLE_Y,
                           PALETTE, PIP, PIPS, SCORE_DIGITS, SCORE_LEFT, SCORE_TOP, SERVE_COLUMNS, SERVE_Y, SPEED_Y)
from envs.game_spec import NOT_HAPPENED, GameSpec, State, counter_rule, seen, sprite_untidy
from envs.pixels import frame_labels, paddle_and_ball, read_number, read_pips

SPRITE_TOLERANCE = 1            # pixels a sprite may miss, and stray pixels of its colour elsewhere, in a tidy frame
MAX_STEP = 2                    # |dx|, |dy| a ball moves in a step, bounces included
_DRAWN = (BRICK_H - 1) * (BRICK_W - 1)                         # 21 brick pixels per brick cell
_BRICK_BOTTOM = BRICK_TOP + BRICK_ROWS * BRICK_H


class BreakoutSpec(GameSpec):
    """Breakout (envs.breakout): paddle column, ball corner, the brick grid, lives, score."""

    env_id = "dreamgym/Breakout-v0"
    fields = ("paddle_x", "ball", "bricks", "lives", "score")
    deterministic = ("paddle_x",)
    until_random = {"ball": ("serve",), "bricks": ("serve",), "lives": ("serve",), "score": ("serve",)}
    random_events = {"serve": SERVE_COLUMNS}

    def real_state(self, info: dict[str, Any]) -> State:
        return {"paddle_x": np.asarray(info["paddle_x"], np.int64), "ball": np.asarray(info["ball"], np.int64),
                "bricks": np.asarray(info["bricks"], bool), "lives": np.asarray(info["lives"], np.int64),
                "score": np.asarray(info["score"], np.int64)}

    def read(self, frames: np.ndarray) -> State:
        labels = frame_labels(frames, PALETTE, "Breakout", FRAME_SIZE)               # (N, 64, 64)
        play = labels[:, HUD_PX:]
        n = len(frames)
        ball, ball_count, paddle, paddle_count = paddle_and_ball(labels, HUD_PX, BALL_COLOUR, BALL, PADDLE, PADDLE_H,
                                                                 PADDLE_W)
        brick = labels == BRICK
        cells = brick[:, BRICK_TOP:_BRICK_BOTTOM].reshape(n, BRICK_ROWS, BRICK_H, BRICK_COLS, BRICK_W)
        counts = cells.sum((2, 4))                                                 # (N, 4, 8)
        lives, pips_tidy = read_pips(labels == PIP, PIPS)
        return {"paddle_x": paddle[:, 1], "ball": ball, "bricks": 2 * counts >= _DRAWN, "lives": lives,
                "score": read_number(labels == DIGIT, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT),
                "paddle_y": paddle[:, 0], "paddle_fill": paddle_count, "paddle_total": (play == PADDLE).sum((1, 2)),
                "ball_fill": ball_count, "ball_total": (play == BALL_COLOUR).sum((1, 2)), "pips_tidy": pips_tidy,
                "bricks_tidy": ((counts <= SPRITE_TOLERANCE) | (counts >= _DRAWN - SPRITE_TOLERANCE)).all((1, 2))
                & (brick.sum((1, 2)) - counts.sum((1, 2)) <= SPRITE_TOLERANCE),
                "hud_stray": ((labels[:, :HUD_PX] == BALL_COLOUR) | (labels[:, :HUD_PX] == PADDLE)
                              | (labels[:, :HUD_PX] == BRICK)).sum((1, 2))}

    def malformed(self, state: State) -> dict[str, np.ndarray]:
        tol = SPRITE_TOLERANCE
        return {"ball_count": sprite_untidy(state["ball_fill"], state["ball_total"], BALL * BALL, tol),
                "ball_in_brick": _ball_in_brick(state["ball"], state["bricks"]),
                "ball_past_paddle": seen(state["ball"]) & (state["ball"][:, 0] + BALL > PADDLE_Y),
                "paddle_count": sprite_untidy(state["paddle_fill"], state["paddle_total"], PADDLE_W * PADDLE_H, tol)
                | (state["paddle_y"] != PADDLE_Y),
                "bricks_broken": ~state["bricks_tidy"],
                "hud": ~state["pips_tidy"] | (state["score"] < 0) | (state["hud_stray"] > tol)}

    def violations(self, before: State, after: State, actions: np.ndarray) -> dict[str, np.ndarray]:
        expected = np.clip(before["paddle_x"] + np.asarray(PADDLE_DELTAS)[actions], 0, PADDLE_MAX)
        served = _served(before, after)
        step = np.abs(after["ball"] - before["ball"]).max(1)
        both = seen(before["ball"]) & seen(after["ball"])
        refilled = after["bricks"].all((1, 2)) & ~before["bricks"].any((1, 2))
        gone = before["bricks"] & ~after["bricks"]                                  # (N, 4, 8)
        removed = gone.sum((1, 2))
        appeared = (after["bricks"] & ~before["bricks"]).any((1, 2))
        return {"paddle_move": (before["paddle_x"] >= 0) & (after["paddle_x"] != expected),
                "ball_jump": ~seen(after["ball"]) | (both & ~served & (step > MAX_STEP)),
                "bricks_rule": (appeared & ~refilled) | (gone & ~_reach(after["ball"])).any((1, 2)),
                "score_rule": counter_rule(before["score"], after["score"], removed, SCORE_DIGITS),
                "lives_rule": (before["lives"] > 0) & (after["lives"] != before["lives"] - served)}

    def events(self, before: State, after: State) -> dict[str, np.ndarray]:
        return {"reward": (before["bricks"] & ~after["bricks"]).any((1, 2)),
                "termination": (after["lives"] == 0) & (before["lives"] > 0)}

    def random(self, before: State, after: State) -> dict[str, np.ndarray]:
        column = np.clip(after["ball"][:, 1] // 4, 0, SERVE_COLUMNS - 1)
        return {"serve": np.where(_served(before, after), column, NOT_HAPPENED).astype(np.int64)}


def _served(before: State, after: State) -> np.ndarray:
    """(N,) bool: the ball left the paddle's row for the serve row (a lost ball, served again)."""
    at_line = before["ball"][:, 0] + BALL + SPEED_Y > PADDLE_Y
    return seen(before["ball"]) & seen(after["ball"]) & at_line & (after["ball"][:, 0] == SERVE_Y)


def _reach(ball: np.ndarray) -> np.ndarray:
    """(N, 2) ball corners -> (N, BRICK_ROWS, BRICK_COLS) bool: brick cells within MAX_STEP pixels of the ball's box
    (where a brick the ball broke this step lies: the ball bounced back from it)."""
    rows, cols = np.arange(BRICK_ROWS), np.arange(BRICK_COLS)
    y0, x0 = BRICK_TOP + rows * BRICK_H, cols * BRICK_W                           # (4,), (8,) cell corners
    top, left = ball[:, :1] - MAX_STEP, ball[:, 1:] - MAX_STEP                   # (N, 1)
    near_y = (y0[None] < top + BALL + 2 * MAX_STEP) & (y0[None] + BRICK_H > top)  # (N, 4)
    near_x = (x0[None] < left + BALL + 2 * MAX_STEP) & (x0[None] + BRICK_W > left)  # (N, 8)
    return seen(ball)[:, None, None] & near_y[:, :, None] & near_x[:, None, :]


def _ball_in_brick(ball: np.ndarray, bricks: np.ndarray) -> np.ndarray:
    """(N,) bool: the ball's box overlaps a present brick's cell."""
    n = len(ball)
    hit = np.zeros(n, bool)
    for dy in (0, BALL - 1):
        for dx in (0, BALL - 1):
            y, x = ball[:, 0] + dy, ball[:, 1] + dx
            row, col = (y - BRICK_TOP) // BRICK_H, x // BRICK_W
            inside = seen(ball) & (row >= 0) & (row < BRICK_ROWS) & (col >= 0) & (col < BRICK_COLS)
            hit |= inside & bricks[np.arange(n), np.clip(row, 0, BRICK_ROWS - 1), np.clip(col, 0, BRICK_COLS - 1)]
    return hit
