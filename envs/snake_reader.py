"""Snake's evaluation spec: a deterministic reader of Snake frames and the game's rules over read states.

For evaluation only (see envs.game_spec). Every pixel takes its nearest `PALETTE` colour; each 4x4 grid
cell then holds what at least half its pixels show (the head shows 14 of 16, its eye the rest; the food
12). The heading is the edge of the head cell whose two middle pixels are the eye; the score is read
from the bar's digits. Exact on real frames (tests/test_game_spec.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from envs.game_spec import NOT_HAPPENED, GameSpec, State, counter_rule, seen
from envs.pixels import palette_labels, read_number
from envs.snake import (BODY, CELL_PX, COLS, DEAD, DELTAS, DIGIT, EYES, FOOD, FOOD_SPRITE, FRAME_SIZE, HEAD, HUD_PX,
                        OPPOSITE, PALETTE, ROWS, SCORE_DIGITS, SCORE_LEFT, SCORE_TOP, START_LENGTH, WALL, WALL_GRID)

_AREA = CELL_PX * CELL_PX
_DIRECTIONS = np.array(sorted(EYES))                                            # (4,) the action ids of the moves
_EYE_MASKS = np.stack([EYES[d] for d in _DIRECTIONS]).reshape(len(_DIRECTIONS), -1)   # (4, 16) bool
_DELTA_TABLE = np.zeros((max(DELTAS) + 1, 2), np.int64)                         # (5, 2) (row, col) per direction
for _d, _delta in DELTAS.items():
    _DELTA_TABLE[_d] = _delta
_OPPOSITE_TABLE = np.array([0] + [OPPOSITE[d] for d in range(1, max(DELTAS) + 1)])


def _cells(labels: np.ndarray) -> np.ndarray:
    """(N, 64, 64) labels -> (N, ROWS, COLS, 16) the labels of each grid cell's pixels."""
    n = len(labels)
    grid = labels[:, HUD_PX:].reshape(n, ROWS, CELL_PX, COLS, CELL_PX)
    return grid.transpose(0, 1, 3, 2, 4).reshape(n, ROWS, COLS, _AREA)


def _first(mask: np.ndarray) -> np.ndarray:
    """(N, ROWS, COLS) bool -> (N, 2) int64 first set cell in row-major order, (-1, -1) where none."""
    flat = mask.reshape(len(mask), -1)
    index = flat.argmax(1)
    cells = np.stack([index // COLS, index % COLS], 1).astype(np.int64)
    cells[~flat.any(1)] = -1
    return cells


def _connected(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(N, ROWS, COLS) bool cells of `allowed` 4-connected to `seed` (flood fill by repeated dilation)."""
    reach = seed & allowed
    for _ in range(ROWS * COLS):
        grown = reach.copy()
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown[:, :, 1:] |= reach[:, :, :-1]
        grown[:, :, :-1] |= reach[:, :, 1:]
        grown &= allowed
        if (grown == reach).all():
            break
        reach = grown
    return reach


class SnakeSpec(GameSpec):
    """Snake (envs.snake): head cell and heading, body cells, food cell, score, dead head."""

    env_id = "dreamgym/Snake-v0"
    fields = ("head", "direction", "dead", "body", "food", "score")
    deterministic = ("head", "direction")
    until_random = {"body": ("food",), "food": ("food",), "score": ("food",), "dead": ("food",)}
    random_events = {"food": ROWS * COLS}

    def real_state(self, info: dict[str, Any]) -> State:
        body = np.zeros((ROWS, COLS), bool)
        cells = np.asarray(info["body"], np.int64).reshape(-1, 2)
        body[cells[:, 0], cells[:, 1]] = True
        return {"head": np.asarray(info["head"], np.int64), "direction": np.asarray(info["direction"], np.int64),
                "dead": np.asarray(info["dead"], bool), "body": body, "food": np.asarray(info["food"], np.int64),
                "score": np.asarray(info["score"], np.int64)}

    def read(self, frames: np.ndarray) -> State:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != (FRAME_SIZE, FRAME_SIZE, 3):
            raise ValueError(f"expected Snake frames (N, {FRAME_SIZE}, {FRAME_SIZE}, 3), got {frames.shape}")
        labels = palette_labels(frames, PALETTE)                                   # (N, 64, 64)
        cells = _cells(labels)                                                     # (N, ROWS, COLS, 16)
        count = {colour: (cells == colour).sum(3) for colour in (WALL, BODY, HEAD, DEAD, FOOD)}
        live, dead = 2 * count[HEAD] >= _AREA, 2 * count[DEAD] >= _AREA
        heads = live | dead
        head = _first(heads)
        n = len(frames)
        rows, cols = np.maximum(head[:, 0], 0), np.maximum(head[:, 1], 0)
        head_pixels = cells[np.arange(n), rows, cols]                              # (N, 16)
        colour = np.where(dead[np.arange(n), rows, cols], DEAD, HEAD)[:, None]
        eye = (head_pixels != colour)                                              # (N, 16)
        matches = (eye[:, None, :] == _EYE_MASKS[None]).all(2)                     # (N, 4)
        direction = np.where(seen(head) & (matches.sum(1) == 1), _DIRECTIONS[matches.argmax(1)], 0)
        food = 2 * count[FOOD] >= FOOD_SPRITE.sum()
        body = 2 * count[BODY] >= _AREA
        return {"head": head, "direction": direction.astype(np.int64), "dead": dead.any((1, 2)), "body": body,
                "food": _first(food), "score": read_number(labels == DIGIT, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT),
                "n_heads": heads.sum((1, 2)), "n_foods": food.sum((1, 2)),
                "walls_intact": ((2 * count[WALL] >= _AREA) == WALL_GRID).all((1, 2)),
                "in_wall": ((body | heads | food) & WALL_GRID).any((1, 2)),
                "body_connected": (_connected(heads, body | heads) == (body | heads)).all((1, 2))}

    def malformed(self, state: State) -> dict[str, np.ndarray]:
        length_ok = state["body"].sum((1, 2)) == state["score"] + START_LENGTH - 1
        food, head = state["food"], state["head"]
        on_snake = seen(food) & (state["body"][np.arange(len(food)), food[:, 0], food[:, 1]]
                                 | (food == head).all(1))
        return {"head_count": (state["n_heads"] != 1) | (state["direction"] == 0),
                "food_count": (state["n_foods"] != 1) | on_snake,
                "walls_broken": ~state["walls_intact"], "in_wall": state["in_wall"],
                "body_broken": ~state["body_connected"] | ~length_ok, "score_unreadable": state["score"] < 0}

    def violations(self, before: State, after: State, actions: np.ndarray) -> dict[str, np.ndarray]:
        n = len(actions)
        judged = seen(before["head"]) & (before["direction"] > 0) & ~before["dead"]
        old = before["direction"]
        turns = (actions > 0) & (actions != _OPPOSITE_TABLE[old])
        heading = np.where(turns, actions, old)
        target = before["head"] + _DELTA_TABLE[heading]
        expected = np.where(after["dead"][:, None], before["head"], target)
        ate = _ate(before, after)
        grown = before["body"].copy()
        rows, cols = np.maximum(before["head"][:, 0], 0), np.maximum(before["head"][:, 1], 0)
        grown[np.arange(n), rows, cols] = True                                      # the old head becomes the neck
        sizes = before["body"].sum((1, 2)), after["body"].sum((1, 2))
        moved_body = ((after["body"] & ~grown).any((1, 2)) | ~after["body"][np.arange(n), rows, cols]
                      | (sizes[1] != sizes[0] + ate))
        body_broken = np.where(after["dead"], (after["body"] != before["body"]).any((1, 2)), moved_body)
        food_moved = (after["food"] != before["food"]).any(1)
        return {"head_move": judged & ((after["head"] != expected).any(1) | (after["direction"] != heading)),
                "body_rule": judged & body_broken,
                "food_rule": judged & seen(before["food"]) & (food_moved != ate),
                "score_rule": judged & counter_rule(before["score"], after["score"], ate.astype(np.int64),
                                                    SCORE_DIGITS)}

    def events(self, before: State, after: State) -> dict[str, np.ndarray]:
        return {"reward": _ate(before, after), "termination": after["dead"] & ~before["dead"]}

    def random(self, before: State, after: State) -> dict[str, np.ndarray]:
        appeared = _ate(before, after) & seen(after["food"])
        return {"food": np.where(appeared, after["food"][:, 0] * COLS + after["food"][:, 1], NOT_HAPPENED)}


def _ate(before: State, after: State) -> np.ndarray:
    """(N,) bool: the live head entered the previous frame's food cell (a +1 step)."""
    return ~after["dead"] & seen(after["head"]) & seen(before["food"]) & (after["head"] == before["food"]).all(1)
