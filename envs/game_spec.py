"""Evaluation specs of the games: what a game's real state is, and how to read it back from any frame.

For evaluation only: the world model and its training never import this module (DESIGN section 8).
Owns the `GameSpec` protocol, the registry `SPECS` (Gymnasium id -> factory) with `spec_for`, and
CoinChase's spec (over `envs.coinchase_reader`); the suite's specs live beside their readers
(envs.catch_reader, envs.snake_reader, envs.breakout_reader). train/eval/game_rules.py runs any spec.

A *state* is a dict of named numpy arrays with a leading batch dimension N: `read(frames)` returns the
spec's `fields` (and may add its own extra keys that `malformed` uses); `real_state(info)` returns the
`fields` of one real step, unbatched, read from the env's `info` (`real_states` stacks many). On real
frames the two agree exactly. Transition rules see two consecutive states `before`, `after` (N rows)
and the action taken between them (N,). Every check returns {name: (N,) bool, True where broken}.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from envs.coinchase import ACTION_DELTAS, CELLS, SCORE_DIGITS, is_free
from envs.coinchase_reader import read_state

State = dict[str, np.ndarray]     # field -> (N, ...) array
NOT_HAPPENED = -1                 # random event location where the event did not happen


class GameSpec(ABC):
    """A game's evaluation spec: state, frame reader, well-formedness, rules, events and random events.

    Class attributes:
      env_id:        the Gymnasium id of the real game
      fields:        state fields the reader returns and `real_state` gives
      deterministic: fields fixed by the start state and the actions at every step of a live episode
      until_random:  field -> random events: the field is fixed by start and actions until one of them happens
      random_events: event name -> number of location bins (1: the event has no place)
    """

    env_id: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    deterministic: ClassVar[tuple[str, ...]]
    until_random: ClassVar[dict[str, tuple[str, ...]]]
    random_events: ClassVar[dict[str, int]]

    @abstractmethod
    def real_state(self, info: dict[str, Any]) -> State:
        """One real step's `fields` from the env's info (arrays without the batch dimension)."""

    @abstractmethod
    def read(self, frames: np.ndarray) -> State:
        """(N, 64, 64, 3) uint8 frames -> their state: `fields` plus any extra keys `malformed` needs."""

    @abstractmethod
    def malformed(self, state: State) -> dict[str, np.ndarray]:
        """One frame's well-formedness from its read state: {check: (N,) bool, True where broken}."""

    @abstractmethod
    def violations(self, before: State, after: State, actions: np.ndarray) -> dict[str, np.ndarray]:
        """The game's transition rules from `before` to `after` under actions (N,): {rule: (N,) bool broken}."""

    @abstractmethod
    def events(self, before: State, after: State) -> dict[str, np.ndarray]:
        """The step's events as the frames show them: {"reward": (N,) bool, "termination": (N,) bool}."""

    @abstractmethod
    def random(self, before: State, after: State) -> dict[str, np.ndarray]:
        """The step's random events: {event: (N,) int64 location bin in [0, random_events[event]), or
        NOT_HAPPENED}."""

    def real_states(self, infos: Sequence[dict[str, Any]]) -> State:
        """Many real steps' states stacked: {field: (N, ...)}."""
        states = [self.real_state(info) for info in infos]
        return {k: np.stack([s[k] for s in states]) for k in self.fields}


# ------------------------------------------------------------ shared rule helpers
def seen(cells: np.ndarray) -> np.ndarray:
    """(N, 2) positions -> (N,) bool: read (not -1)."""
    return (cells >= 0).all(1)


def counter_rule(before: np.ndarray, after: np.ndarray, delta: np.ndarray, digits: int) -> np.ndarray:
    """(N,) bool broken: a displayed counter is unreadable (-1) now, or, read before, did not change by
    exactly `delta` (modulo 10**digits)."""
    judged = before >= 0
    return (after < 0) | (judged & ((after - before - delta) % 10 ** digits != 0))


def sprite_untidy(fill: np.ndarray, total: np.ndarray, area: int, tolerance: int) -> np.ndarray:
    """(N,) bool: a sprite of `area` pixels is not drawn once. `fill` (N,) pixels of its colour in its best
    window, `total` (N,) in the whole region: it misses more than `tolerance` pixels, or has that many strays."""
    return (fill < area - tolerance) | (total - fill > tolerance)


# ------------------------------------------------------------ CoinChase
_MOVES = ACTION_DELTAS            # (5, 2) (row, col) per action id; its row order names the enemy's step bins


class CoinChaseSpec(GameSpec):
    """CoinChase (envs.coinchase) read by envs.coinchase_reader."""

    env_id = "dreamgym/CoinChase-v0"
    fields = ("player", "coin", "enemy", "score")
    deterministic = ("player",)
    until_random = {"coin": ("coin",), "score": ("coin",)}
    random_events = {"coin": CELLS * CELLS, "enemy_step": len(_MOVES)}

    def real_state(self, info: dict[str, Any]) -> State:
        return {"player": np.asarray(info["player"], np.int64), "coin": np.asarray(info["coin"], np.int64),
                "enemy": np.asarray(info["enemy"], np.int64), "score": np.asarray(info["score"], np.int64)}

    def read(self, frames: np.ndarray) -> State:
        state = read_state(frames)
        return {"player": state.player, "coin": state.coin, "enemy": state.enemy, "score": state.score,
                "one_of_each": state.one_of_each, "walls_intact": state.walls_intact,
                "entity_in_wall": state.entity_in_wall}

    def malformed(self, state: State) -> dict[str, np.ndarray]:
        return {"entity_count": ~state["one_of_each"], "walls_broken": ~state["walls_intact"],
                "in_wall": state["entity_in_wall"], "score_unreadable": state["score"] < 0}

    def violations(self, before: State, after: State, actions: np.ndarray) -> dict[str, np.ndarray]:
        expected = np.array([_moved(tuple(p), int(a)) for p, a in zip(before["player"], actions, strict=True)],
                            np.int64).reshape(-1, 2)
        judged = seen(before["player"])
        reached = _reached(before, after)
        enemy_both = seen(before["enemy"]) & seen(after["enemy"])
        coin_moved = (after["coin"] != before["coin"]).any(1)
        return {"player_move": judged & (after["player"] != expected).any(1),
                "enemy_jump": enemy_both & (np.abs(after["enemy"] - before["enemy"]).sum(1) > 1),
                "coin_rule": seen(before["coin"]) & (coin_moved != reached),
                "score_rule": counter_rule(before["score"], after["score"], reached.astype(np.int64), SCORE_DIGITS)}

    def events(self, before: State, after: State) -> dict[str, np.ndarray]:
        both = seen(after["player"]) & seen(after["enemy"])
        swapped = (after["enemy"] == before["player"]).all(1) & (after["player"] == before["enemy"]).all(1)
        caught = both & ((after["enemy"] == after["player"]).all(1) | swapped)
        return {"reward": _reached(before, after), "termination": caught}

    def random(self, before: State, after: State) -> dict[str, np.ndarray]:
        respawned = _reached(before, after) & seen(after["coin"])
        coin = np.where(respawned, after["coin"][:, 0] * CELLS + after["coin"][:, 1], NOT_HAPPENED)
        step = after["enemy"] - before["enemy"]                                        # (N, 2)
        match = (step[:, None, :] == _MOVES[None]).all(2)                              # (N, 5)
        valid = seen(before["enemy"]) & seen(after["enemy"]) & match.any(1)
        return {"coin": coin.astype(np.int64), "enemy_step": np.where(valid, match.argmax(1), NOT_HAPPENED)}


def _moved(cell: tuple[int, int], action: int) -> tuple[int, int]:
    target = (int(cell[0] + _MOVES[action][0]), int(cell[1] + _MOVES[action][1]))
    return target if is_free(target) else (int(cell[0]), int(cell[1]))


def _reached(before: State, after: State) -> np.ndarray:
    """(N,) bool: the player entered the previous frame's coin cell."""
    return seen(after["player"]) & seen(before["coin"]) & (after["player"] == before["coin"]).all(1)


# ------------------------------------------------------------ registry
def _lazy(path: str) -> Callable[[], GameSpec]:
    """A factory importing "module:Class" on first use (the readers import this module for GameSpec)."""
    module, name = path.split(":")

    def factory() -> GameSpec:
        return getattr(importlib.import_module(module), name)()

    return factory


SPECS: dict[str, Callable[[], GameSpec]] = {
    "dreamgym/CoinChase-v0": CoinChaseSpec,
    "dreamgym/Catch-v0": _lazy("envs.catch_reader:CatchSpec"),
    "dreamgym/Snake-v0": _lazy("envs.snake_reader:SnakeSpec"),
    "dreamgym/Breakout-v0": _lazy("envs.breakout_reader:BreakoutSpec"),
}


def spec_for(env_id: str) -> GameSpec:
    """The evaluation spec of a registered game id."""
    if env_id not in SPECS:
        raise KeyError(f"no evaluation spec for {env_id!r}; specs exist for {sorted(SPECS)}")
    return SPECS[env_id]()
