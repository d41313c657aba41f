"""The game suite (Catch, Snake, Breakout) as a specification: the Gymnasium API and each docstring's rules.

Games are driven with public moves and their scripted players (`tracking_action`, `food_seeking_action`);
a rule that needs a rare position (the snake biting its body, the last brick) sets the game's state first.
"""
from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs import breakout, catch, snake

GAMES = {"dreamgym/Catch-v0": catch, "dreamgym/Snake-v0": snake, "dreamgym/Breakout-v0": breakout}
ALE_NAMES = {"NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN"}


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **kwargs).unwrapped


class Step(NamedTuple):
    before: dict[str, Any]      # the info before the action
    action: int
    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    after: dict[str, Any]       # the info the step returned


def play(env: gym.Env, seed: int, steps: int, rng: np.random.Generator, player=None, eps: float = 1.0) -> list[Step]:
    """Run `steps` steps (resetting at episode ends): a random action with probability eps, else player(info)."""
    obs, info = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        random = player is None or rng.random() < eps
        action = int(rng.integers(env.action_space.n)) if random else player(info)
        obs, reward, terminated, truncated, after = env.step(action)
        out.append(Step(info, action, obs, reward, terminated, truncated, after))
        info = after
        if terminated or truncated:
            obs, info = env.reset()
    return out


# ------------------------------------------------------------ every game
@pytest.mark.parametrize("env_id", GAMES)
def test_passes_the_gymnasium_env_checker(env_id):
    check_env(make(env_id), skip_render_check=False)


@pytest.mark.parametrize("env_id", GAMES)
def test_spaces_are_64x64_rgb_uint8_and_discrete_with_ale_action_names(env_id):
    env = make(env_id)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    names = env.get_action_meanings()
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == len(names)
    assert names[0] == "NOOP" and set(names) <= ALE_NAMES


@pytest.mark.parametrize("env_id", GAMES)
def test_same_seed_and_actions_give_identical_steps_and_other_seeds_differ(env_id):
    runs = [play(make(env_id), seed, 300, np.random.default_rng(7)) for seed in (3, 3, 4)]
    for a, b in zip(runs[0], runs[1], strict=True):
        assert np.array_equal(a.obs, b.obs) and a[3:6] == b[3:6]
        assert all(np.array_equal(a.after[k], b.after[k]) for k in a.after)
    assert any(not np.array_equal(a.obs, c.obs) for a, c in zip(runs[0], runs[2], strict=True))


@pytest.mark.parametrize("env_id", GAMES)
def test_every_pixel_is_a_palette_colour(env_id):
    palette = GAMES[env_id].PALETTE
    frames = np.stack([step.obs for step in play(make(env_id), 0, 300, np.random.default_rng(0))])
    packed = frames.reshape(-1, 3).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])      # one int per colour
    assert set(np.unique(packed)) <= set(palette.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1]))


@pytest.mark.parametrize("env_id", GAMES)
def test_bad_actions_and_steps_before_reset_are_refused(env_id):
    env = make(env_id)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction, match="99"):
        env.step(99)


@pytest.mark.parametrize("env_id", GAMES)
def test_truncation_at_the_horizon_and_rgb_render_returns_the_observation(env_id):
    env = make(env_id, horizon=3, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert np.array_equal(env.render(), obs)
    steps = [env.step(0) for _ in range(3)]                      # no game ends in 3 NOOPs from its start
    assert [(s[2], s[3]) for s in steps] == [(False, False), (False, False), (False, True)]
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


@pytest.mark.parametrize("env_id", ["dreamgym/Catch-v0", "dreamgym/Breakout-v0"])
def test_a_game_that_is_not_lethal_goes_on_at_zero_lives(env_id):
    steps = play(make(env_id, lives=1, lethal=False), 0, 600, np.random.default_rng(0))
    lost = [s for s in steps if s.after["lives"] == 0]
    assert len(lost) > 100 and not any(s.terminated for s in steps)
    assert sum(s.reward for s in lost) > 0                          # catches / bricks still pay at 0 lives


# ------------------------------------------------------------ Catch
def test_catch_paddle_moves_three_pixels_and_stops_at_the_edges():
    env = make("dreamgym/Catch-v0")
    _, info = env.reset(seed=0)
    assert info["paddle_x"] == catch.PADDLE_START
    xs = [int(env.step(catch.ACTION_MEANINGS.index("LEFT"))[4]["paddle_x"]) for _ in range(12)]
    assert xs[:3] == [23, 20, 17] and xs[-1] == 0


def test_catch_ball_falls_2_to_4_pixels_straight_down_until_caught_or_lost():
    speeds = set()
    for before, _, _, _, _, _, after in play(make("dreamgym/Catch-v0"), 1, 1000, np.random.default_rng(1)):
        if after["caught"] or after["lost"]:
            assert after["ball"][0] == catch.SPAWN_Y
            assert before["ball"][0] + catch.BALL + before["speed"] > catch.PADDLE_Y
        elif after["lives"] == before["lives"]:      # same episode
            step = after["ball"] - before["ball"]
            assert step[1] == 0 and step[0] == after["speed"] == before["speed"]
            speeds.add(int(step[0]))
    assert speeds == set(catch.SPEEDS)


def test_a_catch_pays_one_and_a_new_ball_appears_at_the_top():
    steps = play(make("dreamgym/Catch-v0"), 0, 300, np.random.default_rng(0), catch.tracking_action, eps=0.0)
    caught = [s for s in steps if s.reward == 1.0]
    assert len(caught) >= 5 and all(s.after["caught"] for s in caught)
    for before, _, _, _, _, _, after in caught:
        assert after["score"] == before["score"] + 1 and after["lives"] == before["lives"]
        assert after["ball"][0] == catch.SPAWN_Y
    assert all(s.reward == 0.0 for s in steps if not s.after["caught"])


def test_missed_balls_cost_lives_drawn_as_pips_and_the_last_life_terminates():
    env = make("dreamgym/Catch-v0", lives=3)
    _, info = env.reset(seed=5)
    lives, ended = [3], False
    for _ in range(500):
        away = 1 if info["ball"][1] > 32 else 2                    # run from the ball
        obs, reward, ended, _, info = env.step(away)
        assert reward == 0.0
        pips = (obs[:catch.HUD_PX] == catch.PALETTE[catch.PIP]).all(2).sum() // 16
        assert pips == info["lives"]
        if info["lives"] != lives[-1]:
            lives.append(int(info["lives"]))
        if ended:
            break
    assert ended and lives == [3, 2, 1, 0]


def test_catch_balls_respawn_at_all_sixteen_columns():
    columns = {int(s.after["ball"][1]) for s in play(make("dreamgym/Catch-v0"), 2, 3000, np.random.default_rng(2),
                                                      catch.tracking_action, eps=0.0) if s.after["caught"]}
    assert columns == {catch.BALL * k for k in range(catch.SPAWN_COLUMNS)}


# ------------------------------------------------------------ Snake
def test_eating_pays_one_grows_the_snake_and_moves_the_food_to_a_free_cell():
    steps = play(make("dreamgym/Snake-v0"), 0, 400, np.random.default_rng(0), snake.food_seeking_action, eps=0.0)
    eaten = [s for s in steps if s.reward == 1.0]
    assert len(eaten) >= 5
    for before, _, _, _, _, _, after in eaten:
        assert np.array_equal(after["head"], before["food"]) and len(after["body"]) == len(before["body"]) + 1
        assert after["score"] == before["score"] + 1 and not np.array_equal(after["food"], before["food"])


def test_food_appears_only_on_free_cells_and_covers_most_of_them():
    env, cells = make("dreamgym/Snake-v0"), set()
    for seed in range(6):
        for step in play(env, seed, 400, np.random.default_rng(seed), snake.food_seeking_action, eps=0.05):
            after = step.after
            food = tuple(int(v) for v in after["food"])
            taken = {tuple(int(v) for v in after["head"])} | {tuple(int(v) for v in c) for c in after["body"]}
            assert not snake.WALL_GRID[food] and food not in taken
            cells.add(food)
    assert len(cells) >= 120                               # of the 168 inner cells


def test_the_wall_ends_the_game_and_the_head_stays_and_turns_red():
    env = make("dreamgym/Snake-v0")
    env.reset(seed=0)
    env.food = (1, 1)                                      # out of the way
    for step in range(snake.COLS):
        obs, _, terminated, _, info = env.step(snake.RIGHT)
        if terminated:
            break
    assert step == snake.COLS - 2 - snake.START_HEAD[1] and info["dead"]
    assert tuple(info["head"]) == (snake.START_HEAD[0], snake.COLS - 2)
    row, col = info["head"]
    head = obs[snake.HUD_PX + row * 4:snake.HUD_PX + row * 4 + 4, col * 4:col * 4 + 4]
    assert (head == snake.PALETTE[snake.DEAD]).all(2).sum() == 14


def test_a_reversal_is_ignored_and_noop_keeps_the_heading():
    env = make("dreamgym/Snake-v0")
    _, info = env.reset(seed=0)
    env.food = (1, 1)
    head = tuple(info["head"])
    for action in (snake.LEFT, 0):
        info = env.step(action)[4]
        head = (head[0], head[1] + 1)
        assert tuple(info["head"]) == head and info["direction"] == snake.RIGHT


@pytest.mark.parametrize("tail_leaves, dies", [(False, True), (True, False)])
def test_biting_the_body_ends_the_game_but_the_leaving_tail_is_free(tail_leaves, dies):
    env = make("dreamgym/Snake-v0")
    env.reset(seed=0)
    body = [(5, 5), (5, 4), (6, 4), (6, 5)] + ([] if tail_leaves else [(6, 6)])   # (6, 5) is the tail or not
    env.snake, env.food = deque(body), (1, 1)
    _, _, terminated, _, info = env.step(snake.DOWN)
    assert terminated == dies and info["dead"] == dies


# ------------------------------------------------------------ Breakout
def test_breakout_paddle_moves_four_pixels_and_stops_at_the_edges():
    env = make("dreamgym/Breakout-v0")
    env.reset(seed=0)
    xs = [int(env.step(2)[4]["paddle_x"]) for _ in range(10)]
    assert xs[:2] == [28, 32] and xs[-1] == breakout.PADDLE_MAX


def test_ball_moves_at_most_two_pixels_per_axis_and_never_overlaps_a_brick():
    for before, _, _, _, _, _, after in play(make("dreamgym/Breakout-v0"), 0, 2000, np.random.default_rng(0),
                                             breakout.tracking_action, eps=0.3):
        rows, cols = breakout.bricks_under(*after["ball"])
        assert not after["bricks"][rows, cols].any()
        if not after["served"] and after["lives"] == before["lives"]:
            assert np.abs(after["ball"] - before["ball"]).max() <= 2


def test_each_broken_brick_vanishes_and_pays_one():
    steps = play(make("dreamgym/Breakout-v0"), 1, 1500, np.random.default_rng(1), breakout.tracking_action, eps=0.0)
    paid = 0.0
    for before, _, _, reward, _, _, after in steps:
        gone = int((before["bricks"] & ~after["bricks"]).sum())
        assert reward == gone and after["score"] == before["score"] + gone
        paid += reward
    assert paid >= 20


def test_the_ball_bounces_up_off_the_paddle():
    bounces = 0
    for before, _, _, _, _, _, after in play(make("dreamgym/Breakout-v0"), 2, 600, np.random.default_rng(2),
                                             breakout.tracking_action, eps=0.0):
        if before["ball"][0] == breakout.PADDLE_Y - breakout.BALL and before["velocity"][1] > 0:
            assert after["velocity"][1] == -breakout.SPEED_Y and after["velocity"][0] in breakout.ZONE_VX
            bounces += 1
    assert bounces >= 5


def test_a_lost_ball_costs_a_life_and_is_served_at_a_random_column():
    served, directions = set(), set()
    for before, _, _, _, terminated, _, after in play(make("dreamgym/Breakout-v0"), 3, 3000, np.random.default_rng(3)):
        if after["served"]:
            assert after["lives"] == before["lives"] - 1 and after["ball"][0] == breakout.SERVE_Y
            assert terminated == (after["lives"] == 0)
            served.add(int(after["ball"][1]))
            directions.add(int(after["velocity"][0]))
    assert len(served) >= 12 and directions == {-1, 1}


def test_the_wall_is_rebuilt_at_the_paddle_bounce_after_the_last_brick():
    env = make("dreamgym/Breakout-v0")
    _, info = env.reset(seed=0)
    env.bricks[:] = False
    for _ in range(200):
        _, _, _, _, info = env.step(breakout.tracking_action(info))
        if info["bricks"].any():
            break
    assert info["bricks"].all() and info["velocity"][1] < 0 and info["ball"][0] == breakout.PADDLE_Y - breakout.BALL
