"""Catch's evaluation spec: a deterministic reader of Catch frames and the game's rules over read states.

For evaluation only (see envs.game_spec). Every pixel takes its nearest `PALETTE` colour; the ball is the
4x4 window with the most ball pixels in the play area, the paddle the 12x3 window with the most paddle
pixels, the lives the lit pips, the score the digits. Exact on real frames (tests/test_game_spec.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from envs.catch import (BALL, BALL_COLOUR, DIGIT, FRAME_SIZE, HUD_PX, PADDLE, PADDLE_DELTAS, PADDLE_H, PADDLE_MAX,
                        PADDLE_W, PADDLE_Y, PALETTE, PIP, PIPS, SCORE_DIGITS, SCORE_LEFT, SCORE_TOP, SPAWN_COLUMNS,
                        SPAWN_Y, SPEEDS)
from envs.game_spec import NOT_HAPPENED, GameSpec, State, counter_rule, seen, sprite_untidy
from envs.pixels import frame_labels, paddle_and_ball, read_number, read_pips

SPRITE_TOLERANCE = 1            # pixels a sprite may miss, and stray pixels of its colour elsewhere, in a tidy frame


class CatchSpec(GameSpec):
    """Catch (envs.catch): paddle column, ball corner, lives, score."""

    env_id = "dreamgym/Catch-v0"
    fields = ("paddle_x", "ball", "lives", "score")
    deterministic = ("paddle_x",)
    until_random = {"ball": ("respawn",), "lives": ("respawn",), "score": ("respawn",)}
    random_events = {"respawn": SPAWN_COLUMNS}

    def real_state(self, info: dict[str, Any]) -> State:
        return {"paddle_x": np.asarray(info["paddle_x"], np.int64), "ball": np.asarray(info["ball"], np.int64),
                "lives": np.asarray(info["lives"], np.int64), "score": np.asarray(info["score"], np.int64)}

    def read(self, frames: np.ndarray) -> State:
        labels = frame_labels(frames, PALETTE, "Catch", FRAME_SIZE)               # (N, 64, 64)
        play = labels[:, HUD_PX:]
        ball, ball_count, paddle, paddle_count = paddle_and_ball(labels, HUD_PX, BALL_COLOUR, BALL, PADDLE, PADDLE_H,
                                                                 PADDLE_W)
        lives, pips_tidy = read_pips(labels == PIP, PIPS)
        return {"paddle_x": paddle[:, 1], "ball": ball, "lives": lives,
                "score": read_number(labels == DIGIT, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT),
                "paddle_y": paddle[:, 0], "paddle_fill": paddle_count, "paddle_total": (play == PADDLE).sum((1, 2)),
                "ball_fill": ball_count, "ball_total": (play == BALL_COLOUR).sum((1, 2)), "pips_tidy": pips_tidy,
                "hud_stray": ((labels[:, :HUD_PX] == BALL_COLOUR) | (labels[:, :HUD_PX] == PADDLE)).sum((1, 2))}

    def malformed(self, state: State) -> dict[str, np.ndarray]:
        ball, tol = state["ball"], SPRITE_TOLERANCE
        return {"ball_count": sprite_untidy(state["ball_fill"], state["ball_total"], BALL * BALL, tol),
                "ball_off_column": seen(ball) & (ball[:, 1] % BALL != 0),
                "ball_past_paddle": seen(ball) & (ball[:, 0] + BALL > PADDLE_Y),
                "paddle_count": sprite_untidy(state["paddle_fill"], state["paddle_total"], PADDLE_W * PADDLE_H, tol)
                | (state["paddle_y"] != PADDLE_Y),
                "hud": ~state["pips_tidy"] | (state["score"] < 0) | (state["hud_stray"] > tol)}

    def violations(self, before: State, after: State, actions: np.ndarray) -> dict[str, np.ndarray]:
        expected = np.clip(before["paddle_x"] + np.asarray(PADDLE_DELTAS)[actions], 0, PADDLE_MAX)
        fell = after["ball"][:, 0] - before["ball"][:, 0]
        falling = ((after["ball"][:, 1] == before["ball"][:, 1]) & (fell >= min(SPEEDS)) & (fell <= max(SPEEDS))
                   & (after["ball"][:, 0] + BALL <= PADDLE_Y))
        respawn = _respawned(before, after)
        both = seen(before["ball"]) & seen(after["ball"])
        caught, lost = _caught(before, after), respawn & ~_caught(before, after)
        lives_judged = before["lives"] > 0
        return {"paddle_move": (before["paddle_x"] >= 0) & (after["paddle_x"] != expected),
                "ball_jump": ~seen(after["ball"]) | (both & ~falling & ~respawn),
                "score_rule": counter_rule(before["score"], after["score"], caught.astype(np.int64), SCORE_DIGITS),
                "lives_rule": lives_judged & (after["lives"] != before["lives"] - lost)}

    def events(self, before: State, after: State) -> dict[str, np.ndarray]:
        return {"reward": _caught(before, after), "termination": (after["lives"] == 0) & (before["lives"] > 0)}

    def random(self, before: State, after: State) -> dict[str, np.ndarray]:
        column = np.clip(after["ball"][:, 1] // BALL, 0, SPAWN_COLUMNS - 1)
        return {"respawn": np.where(_respawned(before, after), column, NOT_HAPPENED).astype(np.int64)}


def _respawned(before: State, after: State) -> np.ndarray:
    """(N,) bool: a new ball at the top after the old one reached the paddle's row (it falls >= 2 px a step)."""
    at_line = before["ball"][:, 0] + BALL + max(SPEEDS) > PADDLE_Y
    return seen(before["ball"]) & seen(after["ball"]) & at_line & (after["ball"][:, 0] == SPAWN_Y)


def _caught(before: State, after: State) -> np.ndarray:
    """(N,) bool: a respawn after the old ball shared a column with the moved paddle (a +1 step)."""
    x, paddle = before["ball"][:, 1], after["paddle_x"]
    return _respawned(before, after) & (x < paddle + PADDLE_W) & (x + BALL > paddle) & (paddle >= 0)
