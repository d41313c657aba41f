"""The viewer's keys: action keys -> the played game's action ids, control keys -> viewer commands.

Owns `KeyMap` (which held keys choose which action id, and each id's name), built by `build_keymap`
from what the game offers, and `HeldKeys`, which tracks the action keys that are down from pygame
events and plays as the human policy (`keys(obs, info) -> action`, like the scripted policies of
envs.policies). Events are the only source: `pygame.key.get_pressed()` does not see posted events
(tests, SDL_VIDEODRIVER=dummy). Knows no env and draws nothing (viewer.realgame asks the envs).

Where the action keys come from, first that applies:
1. the game's `get_keys_to_action()` (gymnasium.utils.play's and ALE's convention: a dict from key
   combinations, tuples of pygame key codes or characters or a string of characters, to action ids);
2. the game's action names (`get_action_meanings()`, as ALE and dreamgym's games have): arrows / WASD
   for the moves, Space for FIRE, held together for a combined name (UPRIGHT, UPFIRE, DOWNLEFTFIRE, ...);
3. neither (a dream whose real game is not installed): number keys only.
Number keys are always there: 0..9 choose ids 0..9, Shift + 0..9 ids 10..19 (keypad digits too).

| key                        | action / command                                               |
|----------------------------|----------------------------------------------------------------|
| (none held)                | the action named NOOP, else id 0                               |
| Up / W, Down / S           | the action named UP, DOWN                                      |
| Left / A, Right / D        | the action named LEFT, RIGHT                                   |
| Space                      | the action named FIRE                                          |
| several held               | the action naming them all: Up+Right UPRIGHT, W+Space UPFIRE   |
| 0 .. 9                     | action id 0 .. 9                                               |
| Shift + 0 .. 9             | action id 10 .. 19                                             |
| R                          | reset                                                          |
| P                          | pause / resume                                                 |
| .                          | single step (pauses)                                           |
| [ / ]                      | denoise steps -1 / +1 (dream only)                             |
| Tab                        | side by side with the checkpoint's real game                   |
| F5                         | start / finish recording                                       |
| Esc                        | quit                                                           |

Of the combinations whose keys are all held, the one with the most keys wins; a tie goes to the one
with the most recently pressed key (so with single keys the newest held key wins, and releasing it
falls back to the one still held). A key pressed and released between two frames still acts once.
Control keys always mean their command: a game's key combination that uses one is dropped (listed in
`KeyMap.dropped`; its action stays on its number key). The action keys above use none of them.
"""
from __future__ import annotations

import enum
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (after hiding pygame's banner)


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
CONTROL_HELP: tuple[tuple[str, str], ...] = (
    ("R", "reset"), ("P", "pause"), (".", "step"), ("[ ]", "denoise"), ("Tab", "compare"), ("F5", "record"),
    ("Esc", "quit"),
)

# Keys of the action names (case does not matter): a name made of these words is the keys held together.
NAME_KEYS: dict[str, tuple[int, ...]] = {
    "UP": (pygame.K_UP, pygame.K_w), "DOWN": (pygame.K_DOWN, pygame.K_s),
    "LEFT": (pygame.K_LEFT, pygame.K_a), "RIGHT": (pygame.K_RIGHT, pygame.K_d), "FIRE": (pygame.K_SPACE,),
}
NAME_WORDS = re.compile("|".join(NAME_KEYS))
NOOP_NAME = "NOOP"
DEFAULT_MEANINGS = ("NOOP", "UP", "DOWN", "LEFT", "RIGHT")   # the bundled game's get_action_meanings()
DIGITS = tuple(zip(range(pygame.K_0, pygame.K_9 + 1), (pygame.K_KP0, *range(pygame.K_KP1, pygame.K_KP9 + 1))))
SHIFTS = (pygame.K_LSHIFT, pygame.K_RSHIFT)
NUMBER_IDS = 2 * len(DIGITS)   # ids with number keys: 0..9, then Shift + 0..9

Combination = frozenset[int]


@dataclass
class KeyMap:
    """Which held key combination chooses which action id of a game with `n_actions` actions."""
    n_actions: int
    combinations: dict[Combination, int] = field(default_factory=dict)
    names: tuple[str, ...] = ()                     # action id -> name ("" where unknown)
    noop: int = 0                                   # the action when no action key is held
    source: str = "number keys"                     # where the non-number keys came from, for the HUD
    dropped: dict[Combination, int] = field(default_factory=dict)   # a game's combinations that use control keys

    @property
    def keys(self) -> frozenset[int]:
        """Every action key."""
        return frozenset().union(*self.combinations)

    def add(self, combination: Iterable[int], action: int) -> None:
        """Map `combination` to `action`, unless an earlier entry has it; one using a control key goes to `dropped`."""
        combination = frozenset(combination)
        if not combination or not 0 <= action < self.n_actions:
            return
        if combination & CONTROL_KEYS.keys():
            self.dropped.setdefault(combination, action)
        else:
            self.combinations.setdefault(combination, action)

    def resolve(self, held: Sequence[int]) -> int | None:
        """The action of the held keys (oldest first), or None when no combination is held."""
        order = {key: i for i, key in enumerate(held)}
        best, best_rank = None, (0, -1)
        for combination, action in self.combinations.items():
            if combination <= order.keys():
                rank = (len(combination), max(order[key] for key in combination))
                if rank > best_rank:
                    best, best_rank = action, rank
        return best

    def name(self, action: int) -> str:
        """The action's name, else its id."""
        return self.names[action] if 0 <= action < len(self.names) and self.names[action] else str(action)

    @property
    def help(self) -> tuple[tuple[str, str], ...]:
        """One HUD entry per group of action keys, then the control keys."""
        last = min(self.n_actions, NUMBER_IDS) - 1
        numbers = ("0" if last == 0 else f"0-{min(last, 9)}") + (" Shift+0-9" if last >= 10 else "")
        entries: list[tuple[str, str]] = []
        if self.source == "game keys":
            keys = sorted({key for combination in self.combinations for key in combination} - number_keys())
            entries.append((" ".join(describe([key]) for key in keys), "play"))
        elif self.source != "number keys":
            if self.keys & {pygame.K_UP, pygame.K_DOWN, pygame.K_LEFT, pygame.K_RIGHT}:
                entries.append(("arrows/WASD", "move"))
            if pygame.K_SPACE in self.keys:
                entries.append(("Space", "fire"))
        return (*entries, (numbers, "action id"), *CONTROL_HELP)


def describe(combination: Iterable[int]) -> str:
    """Key names of a combination, e.g. "left shift+1"."""
    return "+".join(sorted(pygame.key.name(key) or str(key) for key in combination))


def number_keys() -> frozenset[int]:
    return frozenset(key for pair in DIGITS for key in pair) | frozenset(SHIFTS)


def key_codes(combination: Any) -> frozenset[int]:
    """A combination as gymnasium.utils.play takes it (a key code, a character, a tuple of either, or a string of
    characters) -> pygame key codes (a character's code is ord(character), as pygame's letter keys are)."""
    items = list(combination) if isinstance(combination, (str, tuple, list, frozenset, set)) else [combination]
    codes = set()
    for item in items:
        if isinstance(item, str):
            if len(item) != 1:
                raise ValueError(f"key {item!r} of {combination!r}: characters are one letter each")
            codes.add(ord(item))
        else:
            codes.add(int(item))
    return frozenset(codes)


def name_keys(name: str) -> list[tuple[int, ...]] | None:
    """The key choices of an action name made of UP/DOWN/LEFT/RIGHT/FIRE words (one tuple of alternatives per
    word), else None: "UPFIRE" -> [(K_UP, K_w), (K_SPACE,)]; "NOOP", "JUMP" -> None."""
    upper = name.upper()
    words = NAME_WORDS.findall(upper)
    if not words or "".join(words) != upper or len(set(words)) != len(words):
        return None
    return [NAME_KEYS[word] for word in words]


def build_keymap(n_actions: int, keys_to_action: Mapping[Any, Any] | None = None,
                 meanings: Sequence[str] | None = None) -> KeyMap:
    """The key map of a game with `n_actions` actions, from its key map and / or its action names (module docstring)."""
    names = tuple(str(name) for name in meanings)[:n_actions] if meanings else ()
    upper = [name.upper() for name in names]
    keymap = KeyMap(n_actions, names=names, noop=upper.index(NOOP_NAME) if NOOP_NAME in upper else 0)
    for action in range(min(n_actions, NUMBER_IDS)):
        for digit in DIGITS[action % len(DIGITS)]:
            if action < len(DIGITS):
                keymap.add({digit}, action)
            else:
                for shift in SHIFTS:
                    keymap.add({shift, digit}, action)
    if keys_to_action:
        keymap.source = "game keys"
        for combination, action in keys_to_action.items():
            keymap.add(key_codes(combination), int(action))
    else:
        for action, name in enumerate(names):
            choices = name_keys(name)
            if choices is not None:
                keymap.source = "action names"
                for combination in itertools.product(*choices):
                    keymap.add(combination, action)
    return keymap


DEFAULT_KEYS = build_keymap(len(DEFAULT_MEANINGS), meanings=DEFAULT_MEANINGS)   # the bundled game's keys
KEY_HELP = DEFAULT_KEYS.help                                                     # the HUD's line for them


def command_for_key(key: int) -> Command | None:
    """The viewer command of a control key, or None for any other key."""
    return CONTROL_KEYS.get(key)


def action_for_key(key: int, keymap: KeyMap = DEFAULT_KEYS) -> int | None:
    """The action id a key selects alone, or None."""
    return keymap.combinations.get(frozenset({key}))


def press(held: tuple[int, ...], key: int, keymap: KeyMap = DEFAULT_KEYS) -> tuple[int, ...]:
    """Held action keys after `key` goes down: it moves to the end (most recent); other keys are ignored."""
    if key not in keymap.keys:
        return held
    return (*release(held, key), key)


def release(held: tuple[int, ...], key: int) -> tuple[int, ...]:
    """Held action keys after `key` goes up."""
    return tuple(k for k in held if k != key)


def action_from_held(held: tuple[int, ...], keymap: KeyMap = DEFAULT_KEYS) -> int:
    """The action of the held keys (module docstring); the no-op when none is held."""
    action = keymap.resolve(held)
    return keymap.noop if action is None else action


class HeldKeys:
    """Action keys held down, fed by pygame events (`on_event`); `next_action()` once per frame.

    Also the human policy: `keys(obs, info)` is `next_action()`, `reset(rng)` does nothing."""

    def __init__(self, keymap: KeyMap = DEFAULT_KEYS) -> None:
        self.keymap = keymap
        self.held: tuple[int, ...] = ()    # oldest first
        self.tapped: int | None = None     # the action chosen by the last action key pressed since the previous frame

    def on_event(self, event) -> Command | None:
        """Feed one pygame event: track action keys; returns the command it asks for (a control key,
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
        self.held = press(self.held, key, self.keymap)
        if key in self.keymap.keys:
            action = self.keymap.resolve(self.held)
            self.tapped = action if action is not None else self.tapped

    def key_up(self, key: int) -> None:
        self.held = release(self.held, key)

    def clear(self) -> None:
        """Forget every key (the window lost focus, so their KEYUPs will not arrive)."""
        self.held, self.tapped = (), None

    def next_action(self) -> int:
        """This frame's action: that of the held keys, else of keys tapped since the last frame, else the no-op."""
        action = self.keymap.resolve(self.held)
        if action is None:
            action = self.tapped if self.tapped is not None else self.keymap.noop
        self.tapped = None
        return action

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return self.next_action()

    def reset(self, rng: np.random.Generator) -> None:
        """A new episode changes nothing: keys still held stay held."""
