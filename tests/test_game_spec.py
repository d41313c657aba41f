"""The games' evaluation specs and the generic rules check, as a specification.

Each reader is exact on real frames; the rules check of a real rollout judged as its own dream is
perfect (no violation, every deterministic part exact, every frame well-formed, event F1 1.0); two
independent real runs have random-event statistics within noise of each other, and a skewed one is not;
a corrupted frame is caught. Real rollouts mix each game's scripted player with random actions, so they
hold rewards, lost lives and terminations.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from envs import breakout, catch, snake
from envs.game_spec import NOT_HAPPENED, SPECS, CoinChaseSpec, spec_for
from envs.policies import make_policy
from train.eval.game_rules import (GameRollouts, check_game, markdown, play_real, random_event_stats, transitions,
                                   tv_distance, tv_noise)

GAME_IDS = ("dreamgym/CoinChase-v0", "dreamgym/Catch-v0", "dreamgym/Snake-v0", "dreamgym/Breakout-v0")
PLAYERS = {"dreamgym/Catch-v0": catch.tracking_action, "dreamgym/Snake-v0": snake.food_seeking_action,
           "dreamgym/Breakout-v0": breakout.tracking_action}
EPSILON = {"dreamgym/CoinChase-v0": 0.2, "dreamgym/Catch-v0": 0.3, "dreamgym/Snake-v0": 0.05,
           "dreamgym/Breakout-v0": 0.3}
ENV_KWARGS = {"dreamgym/Catch-v0": {"lives": 2}, "dreamgym/Breakout-v0": {"lives": 2}}
ROWS, HORIZON = 8, 300
REPO = Path(__file__).resolve().parents[1]
EVALUATION_ONLY = {"envs.game_spec", "envs.catch_reader", "envs.snake_reader", "envs.breakout_reader"}
MODEL_AND_TRAINING = ("worldmodel", "train/stages", "train/common", "train/pipeline.py")
# Random-event runs: many live steps (CoinChase without its lethal catch, more lives, random play where
# that loses balls often) so each event has hundreds of samples: (epsilon, env kwargs).
EVENT_RUNS = {"dreamgym/CoinChase-v0": (0.2, {"lethal": False}), "dreamgym/Catch-v0": (1.0, {"lives": 5}),
              "dreamgym/Snake-v0": (0.05, {}), "dreamgym/Breakout-v0": (1.0, {"lives": 5})}
EVENT_ROWS, EVENT_HORIZON = 32, 150


class Scripted:
    """A game's scripted player with probability 1 - eps per step, else a uniform random action."""

    def __init__(self, player, n_actions: int, eps: float):
        self.player, self.n_actions, self.eps = player, n_actions, eps
        self.rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, obs: np.ndarray, info: dict) -> int:
        return int(self.rng.integers(self.n_actions)) if self.rng.random() < self.eps else self.player(info)


def policy(env_id: str, eps: float | None = None):
    eps = EPSILON[env_id] if eps is None else eps
    if env_id == "dreamgym/CoinChase-v0":
        return make_policy("seeker", 5, np.random.default_rng(0), epsilon=eps)
    n_actions = {"dreamgym/Catch-v0": 3, "dreamgym/Snake-v0": 5, "dreamgym/Breakout-v0": 3}[env_id]
    return Scripted(PLAYERS[env_id], n_actions, eps)


_CACHE: dict[tuple[str, int], GameRollouts] = {}


def real(env_id: str, first_seed: int = 0) -> GameRollouts:
    """ROWS real rollouts of HORIZON steps from seeds first_seed.. (cached: several tests judge the same)."""
    key = (env_id, first_seed)
    if key not in _CACHE:
        seeds = list(range(first_seed, first_seed + ROWS))
        _CACHE[key] = play_real(spec_for(env_id), seeds, HORIZON, policy(env_id), ENV_KWARGS.get(env_id))
    return _CACHE[key]


def test_every_game_of_the_suite_has_a_spec_and_unknown_ids_are_refused():
    assert set(GAME_IDS) <= set(SPECS) and isinstance(spec_for("dreamgym/CoinChase-v0"), CoinChaseSpec)
    for env_id in GAME_IDS:
        spec = spec_for(env_id)
        assert spec.env_id == env_id
        assert set(spec.deterministic) | set(spec.until_random) <= set(spec.fields)
        assert all(set(events) <= set(spec.random_events) for events in spec.until_random.values())
    with pytest.raises(KeyError, match="dreamgym/Nope-v0"):
        spec_for("dreamgym/Nope-v0")


def test_the_model_and_its_training_import_no_evaluation_spec():
    importers = []
    for part in MODEL_AND_TRAINING:
        paths = [REPO / part] if part.endswith(".py") else sorted((REPO / part).rglob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):        # from envs import game_spec counts too
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                importers += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n in EVALUATION_ONLY]
    assert not importers


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_the_reader_is_exact_and_every_real_frame_well_formed(env_id):
    spec, rollouts = spec_for(env_id), real(env_id)
    frames = rollouts.frames.reshape(-1, 64, 64, 3)
    read = spec.read(frames)
    for field in spec.fields:
        truth = rollouts.states[field].reshape(len(frames), *rollouts.states[field].shape[2:])
        wrong = ~(read[field] == truth).reshape(len(frames), -1).all(1)
        assert not wrong.any(), f"{field} misread in {wrong.sum()} frames, first {np.nonzero(wrong)[0][:3]}"
    broken = {name: int(flags.sum()) for name, flags in spec.malformed(read).items() if flags.any()}
    assert not broken


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_real_events_match_the_real_rewards_and_terminations(env_id):
    spec, rollouts = spec_for(env_id), real(env_id)
    events = transitions(spec, rollouts.states, rollouts.actions)["events"]
    alive = rollouts.alive
    assert np.array_equal(events["reward"][alive], rollouts.rewards[alive] > 0)
    assert np.array_equal(events["termination"][alive], rollouts.terminations[alive])
    assert (rollouts.rewards[alive] > 0).sum() >= 5 and rollouts.terminations.sum() >= 2


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_the_rules_check_of_real_rollouts_is_perfect(env_id):
    spec, rollouts = spec_for(env_id), real(env_id)
    last = int(np.nonzero(rollouts.alive.any(0))[0].max()) + 1                  # the last step any row plays
    report = check_game(spec, rollouts, rollouts.frames[:, 1:], rollouts.rewards, rollouts.terminations,
                        horizons=(1, 32, last, last + 1, 1000))
    assert [row.horizon for row in report.horizons] == [1, 32, last]            # later: no row alive there
    for row in report.horizons:
        assert row.deterministic_exact == 1.0 and row.well_formed == 1.0
        assert row.violations_per_frame == 0.0 and row.violation_rate == 0.0
        assert all(row.exact[f] == 1.0 for f in row.exact if row.exact_rows[f] > 0)
    last = report.horizons[-1]
    assert last.reward_f1 == 1.0 and last.termination_f1 == 1.0 and last.reward_events >= 5
    assert not any(report.check_rates.values())
    for stats in report.random.values():
        assert stats.rate_real == stats.rate_dream and stats.n_real == stats.n_dream
        assert stats.tv != stats.tv or stats.tv == 0.0                     # nan (no location) or identical
    assert f"Rules check: {env_id}" in markdown(report)


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_two_independent_real_runs_agree_on_random_events_within_noise(env_id):
    spec, (eps, kwargs) = spec_for(env_id), EVENT_RUNS[env_id]
    a, b = (play_real(spec, list(range(seed, seed + EVENT_ROWS)), EVENT_HORIZON, policy(env_id, eps), kwargs)
            for seed in (0, 1000))
    events = [transitions(spec, run.states, run.actions)["random"] for run in (a, b)]
    stats = random_event_stats(spec, events[0], a.alive, events[1], b.alive)
    for event, s in stats.items():
        assert s.n_real >= 100 and s.n_dream >= 100, (event, s)
        pooled = (s.n_real + s.n_dream) / (s.steps_real + s.steps_dream)
        assert abs(s.rate_real - s.rate_dream) <= 4 * np.sqrt(pooled * (1 - pooled) * (1 / s.steps_real
                                                                                       + 1 / s.steps_dream)) + 1e-9
        if spec.random_events[event] > 1:
            assert s.tv <= 1.3 * s.tv_noise + 0.02, (event, s)


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_a_dream_whose_random_objects_appear_in_one_half_of_their_places_is_caught(env_id):
    spec, rollouts = spec_for(env_id), real(env_id)
    events = transitions(spec, rollouts.states, rollouts.actions)["random"]
    event = max(spec.random_events, key=spec.random_events.get)                # the event with most places
    skewed = {k: v.copy() for k, v in events.items()}
    happened = skewed[event] != NOT_HAPPENED
    skewed[event][happened] = skewed[event][happened] // 2                   # every place folded into the lower half
    s = random_event_stats(spec, events, rollouts.alive, skewed, rollouts.alive)[event]
    assert s.tv > 1.3 * s.tv_noise + 0.02, s


def test_tv_distance_and_its_noise_floor():
    assert tv_distance(np.array([5, 5]), np.array([10, 10])) == 0.0
    assert tv_distance(np.array([4, 0]), np.array([0, 4])) == 1.0
    assert tv_distance(np.array([0, 0]), np.array([1, 1])) != tv_distance(np.array([0, 0]), np.array([1, 1]))   # nan
    few, many = tv_noise(np.full(16, 2), np.full(16, 2)), tv_noise(np.full(16, 200), np.full(16, 200))
    assert 0.0 < many < few < 1.0


# ------------------------------------------------------------ corrupted frames
def _paint(frame: np.ndarray, rows: slice, cols: slice, colour: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[rows, cols] = colour
    return out


def _corrupt(env_id: str, frame: np.ndarray, state: dict) -> np.ndarray:
    """One clear break of the game's rules drawn into a real frame (state: that frame's real state)."""
    if env_id == "dreamgym/CoinChase-v0":                   # the coin vanishes
        r, c = state["coin"]
        return _paint(frame, slice(8 * r, 8 * r + 8), slice(8 * c, 8 * c + 8), np.array([20, 24, 40], np.uint8))
    if env_id == "dreamgym/Catch-v0":                       # the ball jumps 8 px sideways
        y, x = state["ball"]
        out = _paint(frame, slice(y, y + 4), slice(x, x + 4), catch.PALETTE[catch.FLOOR])
        x = x + 8 if x < 32 else x - 8
        return _paint(out, slice(y, y + 4), slice(x, x + 4), catch.PALETTE[catch.BALL_COLOUR])
    if env_id == "dreamgym/Snake-v0":                       # a second food
        r, c = [(r, c) for r in range(1, 13) for c in range(1, 15) if not state["body"][r, c]
                and (r, c) != tuple(state["head"]) and (r, c) != tuple(state["food"])][0]
        return _paint(frame, slice(8 + 4 * r, 12 + 4 * r), slice(4 * c, 4 * c + 4), snake.PALETTE[snake.FOOD])
    r, c = np.argwhere(state["bricks"])[0]                  # Breakout: the first brick vanishes far from the ball
    y, x = breakout.BRICK_TOP + 4 * r, 8 * c
    return _paint(frame, slice(y, y + 4), slice(x, x + 8), breakout.PALETTE[breakout.FLOOR])


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_a_corrupted_frame_is_caught_as_malformed_or_a_violation(env_id):
    spec, rollouts = spec_for(env_id), real(env_id)
    t = 3                                                   # frame 3 of row 0: early, so every row is alive
    assert rollouts.alive[0, t - 1]
    if env_id == "dreamgym/Breakout-v0":
        assert rollouts.states["ball"][0, t][0] > breakout.BRICK_TOP + 4 * breakout.BRICK_ROWS + 2
    dream = rollouts.frames[:, 1:].copy()
    state = {k: v[0, t] for k, v in rollouts.states.items()}
    dream[0, t - 1] = _corrupt(env_id, dream[0, t - 1], state)
    before, after = spec.read(rollouts.frames[0, t - 1:t]), spec.read(dream[0, t - 1:t])
    flags = {**spec.malformed(after), **spec.violations(before, after, rollouts.actions[0, t - 1:t])}
    caught_by = {"dreamgym/CoinChase-v0": "entity_count", "dreamgym/Catch-v0": "ball_jump",
                 "dreamgym/Snake-v0": "food_count", "dreamgym/Breakout-v0": "bricks_rule"}[env_id]
    assert flags[caught_by][0], flags
    report = check_game(spec, rollouts, dream[:, :32], rollouts.rewards, rollouts.terminations, horizons=(32,))
    assert (report.horizons[0].well_formed < 1.0) or (report.horizons[0].violations_per_frame > 0.0)


@pytest.mark.parametrize("env_id", ["dreamgym/Catch-v0", "dreamgym/Snake-v0", "dreamgym/Breakout-v0"])
def test_another_seed_under_the_same_keys_keeps_the_deterministic_parts_but_not_the_random_ones(env_id):
    spec, rollouts = spec_for(env_id), real(env_id)
    other = play_real(spec, list(range(500, 500 + ROWS)), 32, rollouts.actions[:, :32], ENV_KWARGS.get(env_id))
    report = check_game(spec, rollouts, other.frames[:, 1:], other.rewards, other.terminations, horizons=(1, 32))
    first = report.horizons[0]
    assert first.deterministic_exact == 1.0
    random_field = {"dreamgym/Catch-v0": "ball", "dreamgym/Snake-v0": "food", "dreamgym/Breakout-v0": "ball"}[env_id]
    assert first.exact[random_field] < 1.0
