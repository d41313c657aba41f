"""play.py and the viewer package: keys drive the real game and the dream, pause and single step,
denoise steps, side by side with a divergence meter, F5 recordings, headless videos, one declaration
of every setting, and clear errors at the boundary.

All headless (tests/conftest.py sets the SDL dummy drivers); keys arrive as posted pygame events.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pygame
import pytest

from envs.coinchase import Action, CoinChaseEnv
from envs.policies import legal_moves
from envs.video import RecordMp4, VideoWriter
from play import main   # play.py sits at the repo root (pytest pythonpath ".")
from viewer.app import Viewer
from viewer.config import PlayConfig, build_parser, parse_args
from viewer.hud import hud_lines
from viewer.keymap import HeldKeys, action_from_held, command_for_key, press, release

REPO = Path(__file__).resolve().parents[1]
FAST = dict(fps=1000.0, scale=2)   # no waiting between ticks, a small window


# ---------------------------------------------------------------------------- helpers
def key_down(key: int) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))


def key_up(key: int) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key))


def screen(viewer: Viewer) -> np.ndarray:
    """What the window shows, (W, H, 3)."""
    return pygame.surfarray.array3d(viewer.screen.surface)


def count_frames(path: Path) -> int:
    capture, frames = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def seed_with_right_free() -> int:
    """A seed whose CoinChase start lets the player step right."""
    return next(s for s in range(100) if Action.RIGHT in legal_moves(tuple(CoinChaseEnv().reset(seed=s)[1]["player"])))


@pytest.fixture
def viewers():
    """Build Viewers from PlayConfig fields; every one is closed after the test."""
    opened: list[Viewer] = []

    def make(**fields) -> Viewer:
        viewer = Viewer(PlayConfig(**{**FAST, **fields}))
        opened.append(viewer)
        return viewer

    yield make
    for viewer in opened:
        viewer.close()


@pytest.fixture
def dream_checkpoint(untrained_checkpoint) -> Path:
    """An untrained checkpoint (its frames depend on the action)."""
    return untrained_checkpoint


def dream(dream_checkpoint: Path, **fields) -> dict:
    """Viewer fields for the dream; the untrained termination head never ends an episode."""
    return {"checkpoint": str(dream_checkpoint), "seed": 0, "env_kwargs": {"termination_threshold": 1.0}, **fields}


# ---------------------------------------------------------------------------- keymap
def test_most_recently_pressed_key_wins_and_release_falls_back():
    held = press(press((), pygame.K_RIGHT), pygame.K_w)
    assert action_from_held(held) == Action.UP                # W pressed last: up
    assert action_from_held(release(held, pygame.K_w)) == Action.RIGHT   # back to the still-held right arrow
    assert action_from_held(()) == Action.NOOP                # nothing held: stay
    assert press((), pygame.K_r) == ()                        # control keys are not movement keys
    assert command_for_key(pygame.K_F5).value == "record"


def test_a_tap_between_frames_still_moves_once():
    keys = HeldKeys()
    keys.key_down(pygame.K_a)
    keys.key_up(pygame.K_a)
    assert keys.next_action() == Action.LEFT
    assert keys.next_action() == Action.NOOP


# ---------------------------------------------------------------------------- real game
@pytest.mark.parametrize("key", [pygame.K_RIGHT, pygame.K_d], ids=["arrow", "wasd"])
def test_right_key_moves_the_player_and_changes_the_frame(viewers, key):
    viewer = viewers(real=True, seed=seed_with_right_free(), env_kwargs={"enemy_move_prob": 0.0})
    viewer.tick()                                            # the first tick resets
    start, before = viewer.game.info["player"].copy(), screen(viewer)

    key_down(key)
    viewer.tick()
    np.testing.assert_array_equal(viewer.game.info["player"], start + [0, 1])
    assert not np.array_equal(screen(viewer), before)

    key_up(key)
    viewer.tick()
    np.testing.assert_array_equal(viewer.game.info["player"], start + [0, 1])   # released: the player stays


def test_r_resets_the_episode(viewers):
    viewer = viewers(real=True, seed=3, env_kwargs={"enemy_move_prob": 0.0})
    viewer.run(max_frames=4)
    assert viewer.game.frame_index == 3 and viewer.game.episodes == 1

    key_down(pygame.K_r)
    viewer.tick()
    assert viewer.game.frame_index == 0 and viewer.game.episodes == 2 and viewer.game.episode_return == 0.0


def test_p_pauses_and_period_steps_once(viewers):
    viewer = viewers(real=True, seed=0)
    viewer.tick()
    key_down(pygame.K_p)
    viewer.tick()
    viewer.tick()
    assert viewer.paused and viewer.game.frame_index == 0

    key_down(pygame.K_PERIOD)
    viewer.tick()
    assert viewer.game.frame_index == 1
    viewer.tick()
    assert viewer.game.frame_index == 1 and viewer.paused

    key_down(pygame.K_p)
    viewer.tick()
    assert not viewer.paused and viewer.game.frame_index == 2


def test_f5_twice_writes_a_minari_dataset_and_its_mp4(viewers, tmp_path, monkeypatch):
    import minari

    viewer = viewers(real=True, seed=0, record_root=str(tmp_path), env_kwargs={"enemy_move_prob": 0.0})
    viewer.tick()
    key_down(pygame.K_F5)
    viewer.tick()                                            # recording starts with a reset
    assert viewer.recorder.recording is not None and viewer.game.frame_index == 0
    for _ in range(5):
        viewer.tick()
    key_down(pygame.K_F5)
    viewer.tick()                                            # finalized before this tick's step
    assert viewer.recorder.recording is None

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = minari.load_dataset("play/real-v0")
    assert dataset.total_steps == 5 and dataset.total_episodes == 1
    assert count_frames(tmp_path / "play/real-v0.mp4") == 5 + 1   # the dataset's observations, reset frame first

    key_down(pygame.K_F5)
    viewer.tick()
    viewer.tick()
    key_down(pygame.K_F5)
    viewer.tick()
    assert (tmp_path / "play/real-v1").is_dir()              # the next recording gets the next version


# ---------------------------------------------------------------------------- dream
def test_dream_keys_change_what_is_rendered(viewers, dream_checkpoint):
    shown = {}
    for name, key in (("right", pygame.K_RIGHT), ("none", None)):
        viewer = viewers(**dream(dream_checkpoint))
        viewer.tick()
        shown[name + "/reset"] = screen(viewer)
        if key is not None:
            key_down(key)
        for _ in range(3):
            viewer.tick()
        assert viewer.game.info["frame_index"] == 3
        shown[name] = screen(viewer)
        viewer.close()
    np.testing.assert_array_equal(shown["right/reset"], shown["none/reset"])   # same seed, same start
    assert not np.array_equal(shown["right"], shown["none"])


def test_brackets_change_denoise_steps_within_bounds(viewers, dream_checkpoint):
    viewer = viewers(**dream(dream_checkpoint, denoise_steps=2))
    most = viewer.game.env.max_denoise_steps
    viewer.tick()
    for _ in range(most + 2):
        key_down(pygame.K_RIGHTBRACKET)
    viewer.tick()
    assert viewer.game.env.denoise_steps == most and viewer.game.info["denoise_steps"] == most
    for _ in range(most + 2):
        key_down(pygame.K_LEFTBRACKET)
    viewer.tick()
    assert viewer.game.env.denoise_steps == 1 and viewer.game.info["denoise_steps"] == 1
    assert viewer.hud_state().denoise_steps == 1


def test_tab_shows_the_real_game_beside_the_dream_with_a_divergence(viewers, dream_checkpoint):
    viewer = viewers(**dream(dream_checkpoint, seed=seed_with_right_free()))
    viewer.tick()
    single_width = viewer.screen.surface.get_width()
    key_down(pygame.K_TAB)
    viewer.tick()                                            # both reset from the same real start
    assert viewer.game.twin is not None and viewer.game.view().shape == (64, 2 * 64 + 2, 3)
    width = viewer.screen.surface.get_width()
    assert width >= (2 * 64 + 2) * viewer.config.scale and width >= single_width
    assert viewer.game.divergence.mae == 0.0                      # the dream starts on the real game's frame

    player = viewer.game.twin.info["player"].copy()
    key_down(pygame.K_d)
    viewer.tick()
    np.testing.assert_array_equal(viewer.game.twin.info["player"], player + [0, 1])   # the same keys drive it
    assert np.isfinite(viewer.game.divergence.mae) and viewer.game.divergence.mae > 0.0
    assert any(line.text.startswith("divergence") for line in hud_lines(viewer.hud_state()))

    key_down(pygame.K_TAB)
    viewer.tick()
    assert viewer.game.twin is None and viewer.game.divergence is None and viewer.game.view().shape == (64, 64, 3)


# ---------------------------------------------------------------------------- command line
def test_headless_command_writes_a_video_of_every_frame(dream_checkpoint, tmp_path):
    video = tmp_path / "out.mp4"
    result = subprocess.run([sys.executable, "play.py", "--headless", "--frames", "20", "--policy", "random",
                             "--video", str(video), "--checkpoint", str(dream_checkpoint), "--scale", "2",
                             "--seed", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})   # a busy 2-core machine: don't oversubscribe
    assert result.returncode == 0, result.stderr
    assert count_frames(video) == 20
    assert "played 20 frames" in result.stdout


@pytest.mark.parametrize("bundled", [True, False], ids=["bundled", "given"])
def test_missing_checkpoint_says_pass_checkpoint_or_real(tmp_path, monkeypatch, capsys, bundled):
    argv = ["--headless", "--frames", "1", "--policy", "random"]
    if bundled:
        monkeypatch.setattr("envs.dream.DEFAULT_CHECKPOINT", tmp_path / "missing")
    else:
        argv += ["--checkpoint", str(tmp_path / "missing")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert "does not exist" in error and "--checkpoint" in error and "--real" in error


@pytest.mark.parametrize("override, expected", [("nope=1", "unknown override 'nope'"),
                                                ("device=cuda", "set by --device"),
                                                ("max_episode_steps", "key=value")])
def test_bad_override_is_a_clear_error(dream_checkpoint, capsys, override, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(dream_checkpoint), "--headless", "--frames", "1", "--policy", "random", override])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert expected in error
    if override == "nope=1":
        assert "max_episode_steps" in error                   # the known keys are listed


def test_overrides_reach_the_env(viewers, dream_checkpoint):
    viewer = viewers(**dream(dream_checkpoint, env_kwargs={"termination_threshold": 1.0, "max_episode_steps": 2}))
    viewer.run(max_frames=4)                                 # reset, 2 steps (truncated), reset
    assert viewer.game.env.max_episode_steps == 2 and viewer.game.episodes == 2


# ---------------------------------------------------------------------------- video wrapper
def test_video_wrapper_refuses_an_existing_path_unless_overwrite(tmp_path):
    path = tmp_path / "game.mp4"
    path.write_bytes(b"not a video")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        RecordMp4(CoinChaseEnv(), path)

    env = RecordMp4(CoinChaseEnv(), path, scale=2, overwrite=True)
    env.reset(seed=0)
    for _ in range(3):
        env.step(0)
    assert path.read_bytes() == b"not a video"               # replaced only when closed
    env.close()
    assert count_frames(path) == 4
    assert not list(tmp_path.glob(".*partial*"))


def test_video_writer_is_atomic(tmp_path):
    path = tmp_path / "sub" / "view.mp4"
    writer = VideoWriter(path, fps=15)
    writer.write(np.zeros((64, 130, 3), np.uint8))
    assert not path.exists()
    writer.abort()
    assert not path.exists() and not list(path.parent.iterdir())
    with pytest.raises(ValueError, match=".mp4"):
        VideoWriter(tmp_path / "view.avi", fps=15)


def test_threads_flag_reaches_the_config():
    config, _ = parse_args(["--real", "--threads", "1"])
    assert config.threads == 1 and config.real


def test_every_default_is_declared_once_in_play_config():
    """The command line's defaults are PlayConfig's: no flags, no overrides -> PlayConfig()."""
    assert parse_args([])[0] == PlayConfig()
    flags = {action.dest for action in build_parser()._actions} - {"help", "overrides"}
    assert flags == set(PlayConfig.__dataclass_fields__) - {"env_kwargs"}


@pytest.mark.parametrize("argv, expected", [(["--policy", "seeker"], "use --real"),
                                            (["--headless", "--frames", "3"], "--policy"),
                                            (["--real", "--side-by-side"], "leave out --real")])
def test_an_unplayable_config_is_a_usage_error(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_the_viewer_uses_only_the_envs_public_api():
    """The viewer and play.py read no private attribute (`x._y`, except their own `self._y`) and no dream internals
    (`.core`)."""
    import ast

    for path in [REPO / "play.py", *sorted((REPO / "viewer").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                where = f"{path.name}:{node.lineno} .{node.attr}"
                own = isinstance(node.value, ast.Name) and node.value.id == "self"
                assert own or not node.attr.startswith("_") or node.attr.startswith("__"), where
                assert node.attr != "core", where
