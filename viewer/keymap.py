"""The viewer's keys: movement keys -> CoinChase actions, control keys -> viewer commands.

Owns the key table (the same one the env docstrings show) as pure functions over pygame key codes,
and `HeldKeys`, which tracks which movement keys are down from pygame events and plays as the human
policy (`keys(obs, info) -> action`, like the scripted policies of envs.policies). Events are the
only source: `pygame.key.get_pressed()` does not see posted events (tests, SDL_VIDEODRIVER=dummy).
When several movement keys are held, the most recently pressed one wins; a key pressed and released
between two frames still moves once. Knows no env and draws nothing.

| key            | action / command                      |
|----------------|---------------------------------------|
| (none)         | 0 stay                                |
| Up / W         | 1 up                                  |
| Down / S       | 2 down                                |
| Left / A       | 3 left                                |
| Right / D      | 4 right                               |
| R              | reset                                 |
| P              | pause / resume                        |
| .              | single step (pauses)                  |
| [ / ]          | denoise steps -1 / +1 (dream only)    |
| Tab            | side-by-side with the real game       |
| F5             | start / finish recording              |
| Esc            | quit                                  |
"""
from __future__ import annotations

import enum
import os
from typing import Any

import numpy as np

from envs.coinchase import Action

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (after hiding pygame's banner)

MOVE_KEYS: dict[int, Action] = {
    pygame.K_UP: Action.UP, pygame.K_w: Action.UP,
    pygame.K_DOWN: Action.DOWN, pygame.K_s: Action.DOWN,
    pygame.K_LEFT: Action.LEFT, pygame.K_a: Action.LEFT,
    pygame.K_RIGHT: Action.RIGHT, pygame.K_d: Action.RIGHT,
}


class Command(enum.Enum):
    """What a control key asks the viewer to do."""
    RESET = "reset"
    PAUSE = "pause"
    STEP = "step"
    FEWER_DENOISE_STEPS = "fewer denoise steps"
    MORE_DENOISE_STEPS = "more denoise steps"
    SIDE_BY_SIDE = "side by side"
    RECORD = "record"
    QUIT = "quit"


CONTROL_KEYS: dict[int, Command] = {
    pygame.K_r: Command.RESET,
    pygame.K_p: Command.PAUSE,
    pygame.K_PERIOD: Command.STEP, pygame.K_KP_PERIOD: Command.STEP,
    pygame.K_LEFTBRACKET: Command.FEWER_DENOISE_STEPS,
    pygame.K_RIGHTBRACKET: Command.MORE_DENOISE_STEPS,
    pygame.K_TAB: Command.SIDE_BY_SIDE,
    pygame.K_F5: Command.RECORD,
    pygame.K_ESCAPE: Command.QUIT,
}

# One line of help per key group, for the HUD and the README.
KEY_HELP: tuple[tuple[str, str], ...] = (
    ("arrows/WASD", "move"), ("R", "reset"), ("P", "pause"), (".", "step"), ("[ ]", "denoise"),
    ("Tab", "compare"), ("F5", "record"), ("Esc", "quit"),
)


def action_for_key(key: int) -> Action | None:
    """The action id a movement key selects, or None for any other key."""
    return MOVE_KEYS.get(key)


def command_for_key(key: int) -> Command | None:
    """The viewer command of a control key, or None for any other key."""
    return CONTROL_KEYS.get(key)


def press(held: tuple[int, ...], key: int) -> tuple[int, ...]:
    """Held movement keys after `key` goes down: it moves to the end (most recent); other keys are ignored."""
    if key not in MOVE_KEYS:
        return held
    return (*release(held, key), key)


def release(held: tuple[int, ...], key: int) -> tuple[int, ...]:
    """Held movement keys after `key` goes up."""
    return tuple(k for k in held if k != key)


def action_from_held(held: tuple[int, ...]) -> Action:
    """The action of the most recently pressed movement key still held; NOOP when none is."""
    return MOVE_KEYS[held[-1]] if held else Action.NOOP


class HeldKeys:
    """Movement keys held down, fed by pygame events (`on_event`); `next_action()` once per frame.

    Also the human policy: `keys(obs, info)` is `next_action()`, `reset(rng)` does nothing."""

    def __init__(self) -> None:
        self.held: tuple[int, ...] = ()     # oldest first
        self.tapped: Action | None = None   # action of the last movement key pressed since the previous frame

    def on_event(self, event) -> Command | None:
        """Feed one pygame event: track movement keys; returns the command it asks for (a control key,
        or QUIT for the window's close button), else None."""
        if event.type == pygame.QUIT:
            return Command.QUIT
        if event.type == pygame.WINDOWFOCUSLOST:
            self.clear()
        elif event.type == pygame.KEYUP:
            self.key_up(event.key)
        elif event.type == pygame.KEYDOWN:
            self.key_down(event.key)
            return command_for_key(event.key)
        return None

    def key_down(self, key: int) -> None:
        self.held = press(self.held, key)
        if key in MOVE_KEYS:
            self.tapped = MOVE_KEYS[key]

    def key_up(self, key: int) -> None:
        self.held = release(self.held, key)

    def clear(self) -> None:
        """Forget every key (the window lost focus, so their KEYUPs will not arrive)."""
        self.held, self.tapped = (), None

    def next_action(self) -> Action:
        """This frame's action: the newest held key, else a key tapped since the last frame, else NOOP."""
        action = action_from_held(self.held) if self.held else (self.tapped if self.tapped is not None else Action.NOOP)
        self.tapped = None
        return action

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> Action:
        return self.next_action()

    def reset(self, rng: np.random.Generator) -> None:
        """A new episode changes nothing: keys still held stay held."""
