"""Scripted policies that drive a real env while it is recorded (train.stages.record, play.py headless).

A policy is a small object: `policy(obs, info) -> action id` and `policy.reset(rng)` at the start of
an episode. `make_policy(name, ...)` builds one by name: "random" (random actions held for a random
number of steps, any Discrete env), "seeker" (walks the shortest path to the coin, CoinChase
only) or "mixed" (switches between the two in random stretches, CoinChase only: the data then has
wall bumps and held keys from the one and many coin pickups from the other). The human policy lives in play.py
(keys -> actions). `baseline_policies(env_id)` names the policies a game is judged against (train.rl's
baselines): "random", plus the scripted players `GAME_BASELINES` declares for that game.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

from envs.coinchase import ACTION_DELTAS, ACTION_NAMES, Action, is_free

POLICY_NAMES = ("random", "seeker", "mixed")
MIXED_SWITCH_PROB = 0.1   # mixed policy: chance per step of switching between random and seeker
# Gymnasium id -> that game's own scripted players (they read its info), judged beside "random" (mixed only records)
GAME_BASELINES: dict[str, tuple[str, ...]] = {"dreamgym/CoinChase-v0": ("seeker",)}


class Policy(Protocol):
    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int: ...

    def reset(self, rng: np.random.Generator) -> None: ...


class RandomPersistentPolicy:
    """Uniformly random actions, each held for a uniform random number of steps in [min_repeat, max_repeat].

    Holding actions gives the recorded data long straight moves as well as quick turns, which a
    world model needs to learn both; min_repeat = max_repeat = 1 is plain uniform random.
    """

    def __init__(self, n_actions: int, min_repeat: int, max_repeat: int, rng: np.random.Generator):
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        if not 1 <= min_repeat <= max_repeat:
            raise ValueError(f"need 1 <= min_repeat <= max_repeat, got min_repeat={min_repeat}, "
                             f"max_repeat={max_repeat}")
        self.n_actions = n_actions
        self.min_repeat = min_repeat
        self.max_repeat = max_repeat
        self.rng = rng
        self._action = 0
        self._left = 0   # steps the current action is still held

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._left = 0

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        if self._left == 0:
            self._action = int(self.rng.integers(self.n_actions))
            self._left = int(self.rng.integers(self.min_repeat, self.max_repeat + 1))
        self._left -= 1
        return self._action


class CoinSeekerPolicy:
    """CoinChase: step along a shortest path (BFS over free cells) to the coin; with probability
    `epsilon` take a random move instead. Never walks into a wall: random moves are drawn among the
    moves whose target cell is free. The path avoids the enemy's cell when it can.

    Reads `info["player"]`, `info["coin"]` and (if present) `info["enemy"]`, (row, col) arrays.
    """

    def __init__(self, epsilon: float, rng: np.random.Generator):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon
        self.rng = rng

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        if "player" not in info or "coin" not in info:
            raise ValueError("the seeker policy reads info['player'] and info['coin'] (CoinChase only); "
                             f"this env's info has keys {sorted(info)}")
        player = _cell(info["player"])
        coin = _cell(info["coin"])
        moves = legal_moves(player)
        if not moves:
            return Action.NOOP
        if self.rng.random() < self.epsilon:
            return moves[int(self.rng.integers(len(moves)))]
        blocked = {_cell(info["enemy"])} if "enemy" in info else set()
        action = first_step(player, coin, blocked)
        if action is None and blocked:
            action = first_step(player, coin, set())
        return Action.NOOP if action is None else action


def _cell(value: Any) -> tuple[int, int]:
    row, col = np.asarray(value).tolist()
    return int(row), int(col)


def _target(cell: tuple[int, int], action: int) -> tuple[int, int]:
    dr, dc = ACTION_DELTAS[action]
    return cell[0] + int(dr), cell[1] + int(dc)


def legal_moves(cell: tuple[int, int]) -> list[int]:
    """Move actions (not noop) whose target cell is free, in action-id order."""
    return [int(a) for a in Action if a != Action.NOOP and is_free(_target(cell, a))]


def first_step(start: tuple[int, int], goal: tuple[int, int], blocked: set[tuple[int, int]]) -> int | None:
    """First action of a shortest path from start to goal over free, unblocked cells (None: no path or already
    there)."""
    if start == goal:
        return None
    first: dict[tuple[int, int], int] = {start: Action.NOOP}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for action in legal_moves(cell):
            nxt = _target(cell, action)
            if nxt in first or (nxt in blocked and nxt != goal):
                continue
            first[nxt] = action if cell == start else first[cell]
            if nxt == goal:
                return first[nxt]
            queue.append(nxt)
    return None


class MixedPolicy:
    """Random-persistent and coin-seeker stretches: each step switches to the other with `switch_prob`."""

    def __init__(self, random: RandomPersistentPolicy, seeker: CoinSeekerPolicy, switch_prob: float,
                 rng: np.random.Generator):
        if not 0.0 < switch_prob <= 1.0:
            raise ValueError(f"switch_prob must be in (0, 1], got {switch_prob}")
        self.policies = (random, seeker)
        self.switch_prob = switch_prob
        self.rng = rng
        self._active = 0

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        for policy in self.policies:
            policy.reset(rng)
        self._active = int(rng.integers(2))

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        if self.rng.random() < self.switch_prob:
            self._active = 1 - self._active
        return self.policies[self._active](obs, info)


def make_policy(name: str, n_actions: int, rng: np.random.Generator, epsilon: float = 0.1,
                min_repeat: int = 1, max_repeat: int = 8) -> Policy:
    """Build a recording policy by name: "random" (RandomPersistentPolicy), "seeker" (CoinSeekerPolicy)
    or "mixed" (MixedPolicy of the two, switching with probability 0.1 per step)."""
    if name == "random":
        return RandomPersistentPolicy(n_actions, min_repeat, max_repeat, rng)
    if name in ("seeker", "mixed"):
        if n_actions != len(ACTION_NAMES):
            raise ValueError(f"the {name} policy plays CoinChase ({len(ACTION_NAMES)} actions), got an env with "
                             f"{n_actions}")
        if name == "seeker":
            return CoinSeekerPolicy(epsilon, rng)
        return MixedPolicy(RandomPersistentPolicy(n_actions, min_repeat, max_repeat, rng),
                           CoinSeekerPolicy(epsilon, rng), MIXED_SWITCH_PROB, rng)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)} (the human policy is play.py)")


def baseline_policies(env_id: str) -> tuple[str, ...]:
    """The scripted policies to judge the game `env_id` with: "random", then its own players (GAME_BASELINES)."""
    return ("random", *GAME_BASELINES.get(env_id, ()))
