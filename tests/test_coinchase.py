"""CoinChase, the bundled real game, as a specification: its rules, its drawing and its Gymnasium API.

The player is placed with public moves only: `reset(seed)` then a shortest walk (`walk_to`) with
the enemy frozen (`enemy_move_prob=0`) so the walk is exact. Tests that need a deterministic enemy
set `enemy_move_prob` and `chase_prob` to 0 or 1.
"""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.coinchase import (ACTION_DELTAS, ACTION_NAMES, CELL_PX, FRAME_SIZE, HUD_ROWS, PALETTE, WALLS, Action,
                            CoinChaseEnv, free_cells, is_free)

MOVES = (Action.UP, Action.DOWN, Action.LEFT, Action.RIGHT)
Cell = tuple[int, int]


# ------------------------------------------------------------------ helpers
def cell(array: np.ndarray) -> Cell:
    """An info entry (row, col) int64 array as a tuple."""
    return int(array[0]), int(array[1])


def expected_move(start: Cell, action: int) -> Cell:
    """The rule: one cell in the action's direction if that cell is free, else stay."""
    target = (start[0] + int(ACTION_DELTAS[action][0]), start[1] + int(ACTION_DELTAS[action][1]))
    return target if is_free(target) else start


def shortest_path(start: Cell, goal: Cell, blocked: set[Cell]) -> list[int] | None:
    """Actions of a shortest walk over free cells avoiding `blocked`, or None if there is none."""
    previous: dict[Cell, tuple[Cell, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == goal:
            actions = []
            while previous[here] is not None:
                here, action = previous[here]
                actions.append(action)
            return actions[::-1]
        for action in MOVES:
            there = expected_move(here, action)
            if there != here and there not in blocked and there not in previous:
                previous[there] = (here, action)
                queue.append(there)
    return None


def walk_to(env: CoinChaseEnv, goal: Cell, seeds=range(200)) -> dict:
    """Reset `env` (enemy frozen) with the first seed from which `goal` is reachable, and walk there.

    Returns the last info. The enemy must not stand on the goal nor on the way."""
    assert env.enemy_move_prob == 0.0, "walks are exact only with a frozen enemy"
    for seed in seeds:
        _, info = env.reset(seed=seed)
        path = shortest_path(cell(info["player"]), goal, {cell(info["enemy"])})
        if path is None:
            continue
        for action in path:
            _, _, terminated, truncated, info = env.step(action)
            assert not (terminated or truncated)
        assert cell(info["player"]) == goal
        return info
    raise AssertionError(f"no seed in {seeds} reaches {goal}")


def play_random(env: CoinChaseEnv, steps: int, seed: int):
    """Yield (observation and info before, action, step result) for `steps` random steps; resets after an episode
    ends."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        action = int(rng.integers(len(ACTION_NAMES)))
        result = env.step(action)
        yield (obs, info), action, result
        obs, _, terminated, truncated, info = result
        if terminated or truncated:
            obs, info = env.reset()


def hud(frame: np.ndarray) -> np.ndarray:
    """The score bar: the top HUD_ROWS rows of cells."""
    return frame[:HUD_ROWS * CELL_PX]


# ------------------------------------------------------------------ Gymnasium API
def test_observation_space_is_64x64_rgb_uint8_and_action_space_is_discrete_5():
    env = CoinChaseEnv()
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(5)
    assert ACTION_NAMES == ("noop", "up", "down", "left", "right")
    assert [int(a) for a in Action] == list(range(env.action_space.n))
    assert [a.name.lower() for a in Action] == list(ACTION_NAMES)
    assert env.get_action_meanings() == ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"]   # ALE's names, in id order
    assert ACTION_DELTAS[Action.UP].tolist() == [-1, 0] and ACTION_DELTAS[Action.RIGHT].tolist() == [0, 1]
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(info) == {"player", "coin", "enemy", "score"}
    assert all(info[k].dtype == np.int64 and info[k].shape == (2,) for k in ("player", "coin", "enemy"))
    assert info["score"] == 0 and info["score"].dtype == np.int64


def test_passes_the_gymnasium_env_checker():
    import envs  # noqa: F401  (a registered spec lets the checker try every render mode)

    check_env(gym.make("dreamgym/CoinChase-v0").unwrapped, skip_render_check=False)


def test_gymnasium_make_builds_it_after_import_envs():
    import envs  # noqa: F401  (registers the ids)

    env = gym.make("dreamgym/CoinChase-v0", horizon=7)
    assert isinstance(env.unwrapped, CoinChaseEnv) and env.unwrapped.horizon == 7
    obs, _ = env.reset(seed=1)
    assert obs.shape == (FRAME_SIZE, FRAME_SIZE, 3)
    env.close()


def test_same_seed_and_actions_give_identical_frames_and_infos():
    def run(seed: int) -> list:
        env = CoinChaseEnv()   # stochastic enemy: the randomness comes from the seed only
        seen = []
        for _, action, (obs, reward, terminated, truncated, info) in play_random(env, 300, seed):
            seen.append((action, obs.copy(), reward, terminated, truncated, {k: v.copy() for k, v in info.items()}))
        return seen

    a, b = run(5), run(5)
    for (*head_a, info_a), (*head_b, info_b) in zip(a, b, strict=True):
        assert head_a[0] == head_b[0] and head_a[2:] == head_b[2:]
        np.testing.assert_array_equal(head_a[1], head_b[1])
        assert info_a.keys() == info_b.keys() and all(np.array_equal(info_a[k], info_b[k]) for k in info_a)


def test_different_seeds_give_different_games():
    env = CoinChaseEnv()
    starts = {env.reset(seed=seed)[0].tobytes() for seed in range(10)}
    assert len(starts) > 1
    runs = [[obs.copy() for *_, (obs, *_) in play_random(CoinChaseEnv(), 50, seed)] for seed in (0, 1)]
    assert any(not np.array_equal(x, y) for x, y in zip(*runs, strict=True))


def test_invalid_arguments_and_actions_are_refused_with_the_value():
    with pytest.raises(ValueError, match="render_mode"):
        CoinChaseEnv(render_mode="ansi")
    with pytest.raises(ValueError, match="horizon"):
        CoinChaseEnv(horizon=0)
    with pytest.raises(ValueError, match="chase_prob"):
        CoinChaseEnv(chase_prob=1.5)
    with pytest.raises(ValueError, match="enemy_move_prob"):
        CoinChaseEnv(enemy_move_prob=-0.1)
    env = CoinChaseEnv()
    with pytest.raises(gym.error.ResetNeeded):
        env.step(Action.NOOP)
    env.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction, match="5"):
        env.step(5)


# ------------------------------------------------------------------ starting state
def test_reset_places_player_coin_and_enemy_on_distinct_free_cells_enemy_far_away():
    env = CoinChaseEnv()
    for seed in range(200):
        _, info = env.reset(seed=seed)
        player, coin, enemy = cell(info["player"]), cell(info["coin"]), cell(info["enemy"])
        assert all(is_free(c) for c in (player, coin, enemy))
        assert len({player, coin, enemy}) == 3
        assert abs(player[0] - enemy[0]) + abs(player[1] - enemy[1]) >= 4
        assert info["score"] == 0


def test_the_maze_has_walls_and_the_score_bar_row_is_not_walkable():
    assert len(free_cells()) == (8 - HUD_ROWS) * 8 - len(WALLS)
    assert all(not is_free(wall) for wall in WALLS)
    assert not is_free((0, 3)) and not is_free((8, 3)) and not is_free((3, -1)) and not is_free((3, 8))


# ------------------------------------------------------------------ the player's moves
@pytest.mark.parametrize("start", free_cells())
def test_every_action_moves_the_player_one_cell_when_free_and_walls_block(start):
    env = CoinChaseEnv(enemy_move_prob=0.0)
    for action in Action:
        walk_to(env, start)
        _, _, _, _, info = env.step(action)
        assert cell(info["player"]) == expected_move(start, action), ACTION_NAMES[action]


def test_walls_and_the_frame_border_block_named_examples():
    env = CoinChaseEnv(enemy_move_prob=0.0)
    for start, action, end in [((1, 2), Action.DOWN, (1, 2)),     # wall (2, 2) below
                               ((1, 0), Action.UP, (1, 0)),       # the score bar is not walkable
                               ((1, 0), Action.LEFT, (1, 0)),     # left border
                               ((7, 7), Action.RIGHT, (7, 7)),    # right border
                               ((7, 7), Action.DOWN, (7, 7)),     # bottom border
                               ((3, 3), Action.LEFT, (3, 3)),     # wall (3, 2) to the left
                               ((3, 3), Action.RIGHT, (3, 4)),    # free
                               ((3, 3), Action.NOOP, (3, 3))]:
        walk_to(env, start)
        _, _, _, _, info = env.step(action)
        assert cell(info["player"]) == end, (start, ACTION_NAMES[action])


# ------------------------------------------------------------------ coins and score
def test_entering_the_coin_cell_pays_one_and_the_coin_respawns_elsewhere():
    env = CoinChaseEnv(enemy_move_prob=0.0)
    for seed in range(50):
        obs, info = env.reset(seed=seed)
        path = shortest_path(cell(info["player"]), cell(info["coin"]), {cell(info["enemy"])})
        if path and len(path) > 1:
            break
    coin = cell(info["coin"])
    for action in path[:-1]:
        obs, reward, _, _, info = env.step(action)
        assert reward == 0.0 and info["score"] == 0 and cell(info["coin"]) == coin
    bar_before = hud(obs).copy()
    obs, reward, terminated, _, info = env.step(path[-1])
    assert reward == 1.0 and info["score"] == 1 and not terminated
    assert cell(info["player"]) == coin
    new_coin = cell(info["coin"])
    assert new_coin != coin and is_free(new_coin) and new_coin != cell(info["enemy"])
    assert not np.array_equal(hud(obs), bar_before), "the score bar shows the new score"


def test_reward_is_one_exactly_on_steps_that_collect_the_coin():
    env = CoinChaseEnv(horizon=300)
    collected = 0
    for (_, previous), _, (_, reward, _, _, info) in play_random(env, 3000, seed=2):
        took_coin = cell(info["player"]) == cell(previous["coin"])
        assert reward == (1.0 if took_coin else 0.0)
        assert info["score"] == previous["score"] + int(took_coin)
        assert (cell(info["coin"]) != cell(previous["coin"])) == took_coin, "the coin moves only when collected"
        collected += took_coin
    assert collected > 10


def test_the_score_bar_changes_exactly_when_the_score_changes():
    env = CoinChaseEnv(horizon=300)
    changes = 0
    for (obs_before, previous), _, (obs, _, _, _, info) in play_random(env, 2000, seed=4):
        score_changed = info["score"] != previous["score"]
        assert (not np.array_equal(hud(obs), hud(obs_before))) == score_changed
        changes += score_changed
    assert changes > 5


# ------------------------------------------------------------------ the enemy
def test_a_frozen_enemy_never_moves():
    env = CoinChaseEnv(enemy_move_prob=0.0)
    for (_, previous), _, (_, _, _, _, info) in play_random(env, 500, seed=0):
        assert cell(info["enemy"]) == cell(previous["enemy"])


def test_a_moving_enemy_steps_at_most_one_cell_onto_free_cells():
    env = CoinChaseEnv(enemy_move_prob=1.0, chase_prob=0.0, horizon=200)
    for (_, previous), _, (_, _, _, _, info) in play_random(env, 2000, seed=1):
        before, after = cell(previous["enemy"]), cell(info["enemy"])
        assert is_free(after) and abs(before[0] - after[0]) + abs(before[1] - after[1]) <= 1


def test_a_chasing_enemy_never_moves_away_from_the_player():
    env = CoinChaseEnv(enemy_move_prob=1.0, chase_prob=1.0)
    for (_, previous), _, (_, _, _, _, info) in play_random(env, 2000, seed=3):
        player, before, after = cell(info["player"]), cell(previous["enemy"]), cell(info["enemy"])
        distance = lambda c: abs(c[0] - player[0]) + abs(c[1] - player[1])  # noqa: E731
        assert distance(after) <= distance(before)
        assert distance(after) == min(distance(expected_move(before, a)) for a in Action)


def test_walking_into_the_enemy_terminates_the_episode():
    env = CoinChaseEnv(enemy_move_prob=0.0)
    _, info = env.reset(seed=0)
    enemy = cell(info["enemy"])
    neighbours = [c for c in (expected_move(enemy, a) for a in MOVES) if c != enemy]
    walk_to(env, neighbours[0])
    action = next(a for a in MOVES if expected_move(neighbours[0], a) == enemy)
    _, _, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    assert cell(info["player"]) == cell(info["enemy"]) == enemy
    with pytest.raises(gym.error.ResetNeeded):
        env.step(Action.NOOP)


def test_a_hunting_enemy_catches_a_player_that_stands_still():
    env = CoinChaseEnv(enemy_move_prob=1.0, chase_prob=1.0)
    _, info = env.reset(seed=0)
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(Action.NOOP)
        if terminated:
            break
    assert terminated and not truncated
    assert cell(info["enemy"]) == cell(info["player"])


def test_a_harmless_enemy_only_flags_the_catch_and_the_episode_goes_on():
    env = CoinChaseEnv(enemy_move_prob=1.0, chase_prob=1.0, lethal=False, horizon=60)
    env.reset(seed=0)
    catches, ended = 0, False
    while not ended:
        _, _, terminated, truncated, info = env.step(Action.NOOP)
        assert not terminated
        catches += env.caught
        ended = truncated
    assert catches > 0 and env.steps == 60


def test_termination_is_exactly_a_shared_cell_or_a_swap():
    env = CoinChaseEnv(enemy_move_prob=1.0, chase_prob=0.5, horizon=100)
    endings = 0
    for (_, previous), _, (_, _, terminated, truncated, info) in play_random(env, 5000, seed=7):
        player, enemy = cell(info["player"]), cell(info["enemy"])
        swapped = enemy == cell(previous["player"]) and cell(previous["enemy"]) == player
        assert terminated == (player == enemy or swapped)
        assert not (terminated and truncated)
        endings += terminated
    assert endings > 10


# ------------------------------------------------------------------ episode length
@pytest.mark.parametrize("horizon", [1, 5, 40])
def test_truncation_at_the_configured_horizon(horizon):
    env = CoinChaseEnv(horizon=horizon, enemy_move_prob=0.0)
    env.reset(seed=0)
    for step in range(1, horizon + 1):
        _, _, terminated, truncated, _ = env.step(Action.NOOP)
        assert not terminated
        assert truncated == (step == horizon)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(Action.NOOP)


# ------------------------------------------------------------------ drawing
def test_every_pixel_is_a_palette_colour():
    env = CoinChaseEnv()
    palette = {tuple(colour) for colour in PALETTE}
    assert len(palette) <= 8
    frames = [obs for *_, (obs, *_) in play_random(env, 500, seed=0)]
    colours = {tuple(c) for c in np.unique(np.concatenate([f.reshape(-1, 3) for f in frames]), axis=0)}
    assert colours <= palette
    assert len(colours) == len(palette), "floor, wall, player, coin, enemy, bar and digits all appear"


def test_rgb_array_render_returns_the_observation():
    env = CoinChaseEnv(render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs)
    obs, *_ = env.step(Action.RIGHT)
    np.testing.assert_array_equal(env.render(), obs)
    no_render = CoinChaseEnv()
    no_render.reset(seed=0)
    assert no_render.render() is None


def test_human_render_opens_a_window_under_the_dummy_video_driver(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = CoinChaseEnv(render_mode="human")
    env.metadata = {**env.metadata, "render_fps": 1000}   # do not sleep between test frames
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    for action in (Action.RIGHT, Action.DOWN, Action.LEFT):
        env.step(action)
    assert env.render() is None
    env.close()
    env.close()   # closing twice is harmless


def test_next_cell_probabilities_match_the_games_own_draws():
    from collections import Counter

    from envs.coinchase import CoinChaseEnv
    env = CoinChaseEnv(lethal=False)
    env.reset(seed=5)
    env.player, env.enemy, env.coin = (4, 3), (3, 3), (4, 2)          # player steps left onto the coin
    enemy, coin = env.next_cell_probabilities(3)
    assert abs(sum(enemy.values()) - 1) < 1e-9 and abs(sum(coin.values()) - 1) < 1e-9
    assert len(coin) == len(env._free) - 2 and (4, 2) not in coin     # respawns anywhere but player / enemy
    counts, n = Counter(), 4000
    for i in range(n):
        env.reset(seed=100 + i)
        env.player, env.enemy, env.coin = (4, 3), (3, 3), (4, 2)
        env.step(3)
        counts[env.enemy] += 1
    for cell, p in enemy.items():
        assert abs(counts[cell] / n - p) < 0.03, (cell, counts[cell] / n, p)
    assert set(counts) <= set(enemy)
