"""The viewer plays any checkpoint's dream, not only CoinChase's: a second game, Slide (defined here: a block
on a 40x48 strip, 3 actions named NOOP, LEFT, RIGHT), gets a tiny untrained checkpoint, and the viewer,
driven by posted pygame key events, takes its keys from the game, shows its real game beside the dream
(frames resized to the dream's 64x64), and names the actions on the HUD. A checkpoint whose game is not
installed still plays, with number keys, and Tab says why there is nothing to compare.

All headless (tests/conftest.py sets the SDL dummy drivers); each test takes about a second.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pygame
import pytest
from gymnasium import spaces

from envs.recording import resize_frame
from play import main
from train.common.untrained import save_untrained
from viewer.app import Viewer
from viewer.compare import GAP
from viewer.config import PlayConfig, parse_args
from viewer.hud import hud_lines
from viewer.keymap import (CONTROL_KEYS, DEFAULT_KEYS, DEFAULT_MEANINGS, HeldKeys, action_from_held, build_keymap,
                           press)
from viewer.realgame import BUNDLED_ENV_ID, action_keys, open_real_env
from worldmodel.checkpoint import START_FILE, read_config, read_tensors

SLIDE_ID, KEYED_SLIDE_ID = "dreamgym-test/Slide-v0", "dreamgym-test/KeyedSlide-v0"
MISSING_ID = "dreamgym-test/NotInstalled-v0"
FAST = {"fps": 1000.0, "scale": 2}   # no waiting between ticks, a small window
DREAM = 64                         # the dream's frame size
NOOP, LEFT, RIGHT = 0, 1, 2
LABEL = 12                         # game rows at the top of a frame that its label ("dream", "real") may cover


class SlideEnv(gym.Env):
    """A white block on a dark 40x48 strip; LEFT / RIGHT move it `speed` pixels, NOOP leaves it. Never ends."""
    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012  (Gymnasium's class attribute)
    HEIGHT, WIDTH, BLOCK = 40, 48, 8

    def __init__(self, render_mode: str | None = None, speed: int = 4):
        self.render_mode, self.speed, self.x = render_mode, speed, 0
        self.observation_space = spaces.Box(0, 255, (self.HEIGHT, self.WIDTH, 3), np.uint8)
        self.action_space = spaces.Discrete(3)

    @classmethod
    def draw(cls, x: int) -> np.ndarray:
        frame = np.full((cls.HEIGHT, cls.WIDTH, 3), (20, 30, 90), np.uint8)
        frame[16:16 + cls.BLOCK, x:x + cls.BLOCK] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = int(self.np_random.integers(8, self.WIDTH - 2 * self.BLOCK))
        return self.draw(self.x), {"x": self.x}

    def step(self, action):
        self.x = int(np.clip(self.x + (0, -self.speed, self.speed)[int(action)], 0, self.WIDTH - self.BLOCK))
        return self.draw(self.x), 0.0, False, False, {"x": self.x}

    def render(self):
        return self.draw(self.x)

    def get_action_meanings(self) -> list[str]:
        return ["NOOP", "LEFT", "RIGHT"]


class KeyedSlideEnv(SlideEnv):
    """Slide with its own keys (gymnasium.utils.play's convention), one of them the viewer's pause key."""

    def get_keys_to_action(self) -> dict:
        return {("j",): LEFT, (ord("l"),): RIGHT, "k": NOOP, ("p",): RIGHT}


for env_id, entry_point in ((SLIDE_ID, SlideEnv), (KEYED_SLIDE_ID, KeyedSlideEnv)):
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point)


# ---------------------------------------------------------------------------- helpers
def key_down(key: int) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))


def key_up(key: int) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key))


def tap(viewer: Viewer, key: int) -> int:
    """Press `key` for one frame; returns the action that frame took."""
    key_down(key)
    viewer.tick()
    key_up(key)
    return viewer.game.action


def shown_frame(viewer: Viewer, index: int) -> np.ndarray:
    """Frame `index` (0 dream, 1 real) of the window, at game resolution (H, W, 3), below its label (LABEL rows)."""
    surface, scale = pygame.surfarray.array3d(viewer.screen.surface).swapaxes(0, 1), viewer.config.scale
    view_width = viewer.game.view().shape[1] * scale
    left = (surface.shape[1] - view_width) // 2 + index * (DREAM + GAP) * scale
    return surface[LABEL * scale:DREAM * scale:scale, left:left + DREAM * scale:scale]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny untrained checkpoints: of Slide, of KeyedSlide, and Slide's weights naming a game that is not
    installed ("missing") or none ("unnamed")."""
    root = tmp_path_factory.mktemp("any-game")
    made = {"slide": save_untrained(root / "slide", env_id=SLIDE_ID, bank=2, context=2),
            "keyed": save_untrained(root / "keyed", env_id=KEYED_SLIDE_ID, bank=2, context=2)}
    for name, env_id in (("missing", MISSING_ID), ("unnamed", "")):
        made[name] = Path(shutil.copytree(made["slide"], root / name))
        config = json.loads((made[name] / "config.json").read_text())
        (made[name] / "config.json").write_text(json.dumps({**config, "env_id": env_id}))
    return made


@pytest.fixture
def viewers():
    """Build Viewers from PlayConfig fields; every one is closed after the test."""
    opened: list[Viewer] = []

    def make(checkpoint: Path, **fields) -> Viewer:
        viewer = Viewer(PlayConfig(**{**FAST, "checkpoint": str(checkpoint), "seed": 0, **fields}))
        opened.append(viewer)
        return viewer

    yield make
    for viewer in opened:
        viewer.close()


# ---------------------------------------------------------------------------- checkpoints of any game
def test_an_untrained_checkpoint_of_any_image_game_names_it_and_starts_from_its_frames(checkpoints):
    config, has_model = read_config(checkpoints["slide"])
    assert has_model and config.env_id == SLIDE_ID and config.dit.n_actions == 3
    assert config.dit.event_channels == 0                       # entity events are CoinChase's, not Slide's
    bank = read_tensors(checkpoints["slide"] / START_FILE)
    assert bank["frames"].shape == (2, 2, DREAM, DREAM, 3)      # Slide's 40x48 frames resized to 64x64
    assert (bank["actions"][:, 0] == 3).all()                   # the reset frame's null action = the action count


# ---------------------------------------------------------------------------- keys from the game
def test_arrow_keys_play_the_named_actions_and_number_keys_play_their_ids(viewers, checkpoints):
    viewer = viewers(checkpoints["slide"])
    viewer.tick()                                               # the first tick resets
    assert viewer.game.env.action_space.n == 3
    assert [tap(viewer, key) for key in (pygame.K_LEFT, pygame.K_RIGHT, pygame.K_a, pygame.K_d)] == [1, 2, 1, 2]
    assert [tap(viewer, key) for key in (pygame.K_2, pygame.K_0, pygame.K_1)] == [2, 0, 1]
    assert tap(viewer, pygame.K_UP) == NOOP and tap(viewer, pygame.K_3) == NOOP   # Slide has no UP and no id 3
    viewer.tick()
    assert viewer.game.action == NOOP                           # nothing held: NOOP

    key_down(pygame.K_LEFT)
    viewer.tick()
    status, *_, help_line = hud_lines(viewer.hud_state())
    assert "action LEFT" in status.text                         # the HUD names the action
    assert "arrows/WASD move" in help_line.text and "0-2 action id" in help_line.text


def test_tab_shows_the_checkpoints_real_game_resized_beside_the_dream(viewers, checkpoints):
    viewer = viewers(checkpoints["slide"])
    viewer.tick()
    key_down(pygame.K_TAB)
    viewer.tick()                                               # both start from one real start
    twin = viewer.game.twin
    assert twin is not None and twin.env.spec.id == SLIDE_ID
    assert viewer.game.view().shape == (DREAM, 2 * DREAM + GAP, 3)
    assert viewer.game.divergence.mae == 0.0                    # the dream starts on the real game's frame

    x = twin.env.unwrapped.x
    key_down(pygame.K_RIGHT)
    viewer.tick()
    assert viewer.game.action == RIGHT and twin.env.unwrapped.x == x + 4   # the same keys drive the real game
    real = resize_frame(SlideEnv.draw(x + 4), DREAM)
    np.testing.assert_array_equal(shown_frame(viewer, 1), real[LABEL:])                # the right half: the real game
    np.testing.assert_array_equal(shown_frame(viewer, 0), viewer.game.obs[LABEL:])     # the left half: the dream

    key_down(pygame.K_TAB)
    viewer.tick()
    assert viewer.game.twin is None and viewer.game.view().shape == (DREAM, DREAM, 3)


def test_a_game_with_get_keys_to_action_is_played_with_its_keys_but_never_the_viewers(viewers, checkpoints):
    viewer = viewers(checkpoints["keyed"])
    viewer.tick()
    assert [tap(viewer, key) for key in (pygame.K_j, pygame.K_l, pygame.K_k)] == [LEFT, RIGHT, NOOP]
    assert tap(viewer, pygame.K_LEFT) == NOOP                   # the game's own map replaces the arrows
    assert tap(viewer, pygame.K_2) == RIGHT                     # number keys stay
    assert viewer.keymap.dropped == {frozenset({pygame.K_p}): RIGHT}
    assert hud_lines(viewer.hud_state())[-1].text.startswith("j k l play  0-2 action id")
    key_down(pygame.K_p)
    viewer.tick()
    assert viewer.paused                                        # P still pauses


@pytest.mark.parametrize("name, why", [("missing", f"{MISSING_ID} is not installed"),
                                       ("unnamed", "names no real game")])
def test_a_checkpoint_without_its_real_game_plays_with_number_keys_and_tab_says_why(viewers, checkpoints, name, why):
    viewer = viewers(checkpoints[name])
    viewer.tick()
    assert [tap(viewer, key) for key in (pygame.K_LEFT, pygame.K_2, pygame.K_1)] == [NOOP, 2, 1]   # no arrows
    assert "action 1" in hud_lines(viewer.hud_state())[0].text
    key_down(pygame.K_TAB)
    viewer.tick()
    assert viewer.game.twin is None and viewer.game.frame_index == 4   # no reset, the dream plays on
    assert "can't show the real game" in viewer.notice.current() and why in viewer.notice.current()


# ---------------------------------------------------------------------------- --real, headless, command line
def test_real_plays_the_checkpoints_game_at_the_dreams_frame_size(viewers, checkpoints):
    viewer = viewers(checkpoints["slide"], real=True, env_kwargs={"speed": 8})
    viewer.tick()
    x = viewer.game.info["x"]
    assert viewer.game.obs.shape == (DREAM, DREAM, 3) and tap(viewer, pygame.K_LEFT) == LEFT
    assert viewer.game.info["x"] == max(x - 8, 0)
    assert "action LEFT" in hud_lines(viewer.hud_state())[0].text


@pytest.mark.parametrize("argv, expected", [(["--real", "checkpoint={missing}"], f"{MISSING_ID} is not installed"),
                                            (["--real", "checkpoint={slide}", "nope=1"], "known keys: speed"),
                                            (["checkpoint={slide}", "--checkpoint", "x"], "give the checkpoint once")])
def test_a_real_game_that_cannot_be_played_is_a_usage_error(checkpoints, capsys, argv, expected):
    argv = [item.format(**checkpoints) for item in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["--headless", "--frames", "1", "--policy", "random", *argv])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_checkpoint_equals_dir_is_the_checkpoint_and_other_overrides_go_to_the_env():
    config, _ = parse_args(["checkpoint=runs/x", "max_episode_steps=5"])
    assert config.checkpoint == "runs/x" and config.env_kwargs == {"max_episode_steps": 5}


@pytest.mark.parametrize("extra", [[], ["--side-by-side"]], ids=["dream", "side-by-side"])
def test_headless_random_play_of_any_checkpoint(checkpoints, capsys, extra):
    argv = ["--headless", "--frames", "6", "--policy", "random", "--seed", "0", f"checkpoint={checkpoints['slide']}"]
    assert main(argv + extra) == 0
    assert "played 6 frames" in capsys.readouterr().out


# ---------------------------------------------------------------------------- the key map's rules
ALE_NAMES = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE",
             "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]


def test_action_names_become_arrows_wasd_space_and_their_combinations():
    keymap = build_keymap(len(ALE_NAMES), meanings=ALE_NAMES)

    def held(*keys: int) -> int:
        return action_from_held(keys, keymap)

    assert held() == 0 and held(pygame.K_SPACE) == 1 and held(pygame.K_w) == 2 and held(pygame.K_RIGHT) == 3
    assert held(pygame.K_UP, pygame.K_RIGHT) == 6 and held(pygame.K_d, pygame.K_w) == 6         # UPRIGHT
    assert held(pygame.K_s, pygame.K_a, pygame.K_SPACE) == ALE_NAMES.index("DOWNLEFTFIRE")
    assert held(pygame.K_UP, pygame.K_DOWN) == 5                                             # no UPDOWN: the newest key
    assert held(pygame.K_7) == 7 and held(pygame.K_LSHIFT, pygame.K_7) == 17                  # number keys, Shift + 10
    assert not keymap.keys & CONTROL_KEYS.keys()                                              # no key is a control


def test_the_bundled_game_gets_its_arrows_and_wasd_through_get_action_meanings():
    env = open_real_env(BUNDLED_ENV_ID)
    try:
        keys_to_action, meanings = action_keys([env])
        keymap = build_keymap(int(env.action_space.n), keys_to_action, meanings)
    finally:
        env.close()
    assert keys_to_action is None and meanings == list(DEFAULT_MEANINGS)
    assert keymap.source == "action names" and keymap.combinations == DEFAULT_KEYS.combinations
    moves = {(pygame.K_UP, pygame.K_w): 1, (pygame.K_DOWN, pygame.K_s): 2, (pygame.K_LEFT, pygame.K_a): 3,
             (pygame.K_RIGHT, pygame.K_d): 4}                                    # the bundled game's action ids
    assert all(action_from_held((key,), keymap) == action for keys, action in moves.items() for key in keys)
    keys = HeldKeys(keymap)
    keys.key_down(pygame.K_RIGHT)
    keys.key_down(pygame.K_UP)
    assert keys.next_action() == 1 and keymap.name(1) == "UP"                   # the newest key wins


def test_without_names_or_keys_every_game_plays_with_number_keys_only():
    digits = {pygame.K_0, pygame.K_1, pygame.K_2, pygame.K_KP0, pygame.K_KP1, pygame.K_KP2}
    assert build_keymap(3).keys == digits and build_keymap(3).source == "number keys"
    assert build_keymap(5).keys == digits | {pygame.K_3, pygame.K_4, pygame.K_KP3, pygame.K_KP4}
    assert press((), pygame.K_LEFT, build_keymap(3)) == ()
    assert build_keymap(3, {"wa": 1, (ord(" "),): 2}).combinations[frozenset({pygame.K_w, pygame.K_a})] == 1
