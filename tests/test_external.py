"""MinAtar's games as 64x64 RGB envs (envs.external). The drawing and the missing-package message need no
MinAtar; the env tests skip cleanly when the optional `minatar` package is not installed."""
from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.external import MINATAR_GAMES, PALETTE, MinAtarRGBEnv, grid_to_frame


def test_grid_to_frame_paints_the_highest_channel_of_each_cell_nearest_neighbour():
    state = np.zeros((10, 10, 4), bool)
    state[0, 0, 1] = True
    state[9, 9, [0, 3]] = True                        # two channels: the higher (3) wins
    frame = grid_to_frame(state)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert (frame[:7, :7] == PALETTE[2]).all()         # cell (0, 0) spans pixels 0..6: channel 1's colour
    assert (frame[58:, 58:] == PALETTE[4]).all()       # cell (9, 9) spans 58..63: channel 3 over channel 0
    empty = np.ones((64, 64), bool)
    empty[:7, :7] = empty[58:, 58:] = False
    assert (frame[empty] == PALETTE[0]).all()


def test_building_without_minatar_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "minatar", None)  # import minatar now raises ImportError
    with pytest.raises(ImportError, match=r"dreamgym\[minatar\]"):
        MinAtarRGBEnv("Breakout")


def test_an_unknown_game_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="Breakout"):
        MinAtarRGBEnv("Pong")


@pytest.mark.parametrize("game", sorted(MINATAR_GAMES))
def test_minatar_games_are_seeded_64x64_rgb_envs_that_show_their_state(game):
    pytest.importorskip("minatar")
    env = gym.make(f"dreamgym/MinAtar-{game}-v0").unwrapped
    check_env(env, skip_render_check=False)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.get_action_meanings()[0] == "NOOP" and len(env.get_action_meanings()) == env.action_space.n

    def run(seed: int) -> list[np.ndarray]:
        obs, info = env.reset(seed=seed)
        rng, frames = np.random.default_rng(0), [obs]
        for _ in range(100):
            obs, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
            assert np.array_equal(obs, grid_to_frame(info["state"]))
            frames.append(obs)
            if terminated or truncated:
                obs, info = env.reset()
        return frames

    first, again, other = run(1), run(1), run(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, c) for a, c in zip(first, other, strict=True))
    pack = np.array([1 << 16, 1 << 8, 1])                  # one int per RGB colour
    drawn = np.unique(np.stack(first).reshape(-1, 3).astype(np.int64) @ pack)
    assert set(drawn) <= set(PALETTE.astype(np.int64) @ pack)
