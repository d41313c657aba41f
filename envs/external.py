"""External games as dreamgym frame envs: MinAtar's five games as 64x64 RGB uint8 Gymnasium envs.

Owns `MinAtarRGBEnv`, which plays a MinAtar game (Young & Tian 2019; `pip install dreamgym[minatar]`) and
draws its 10x10 grid of C boolean channels as a 64x64 RGB frame: each cell takes the colour of the
highest-numbered channel set there (as MinAtar's own display does) from a fixed palette, upscaled by nearest
neighbour (cells are 6 or 7 pixels wide). MinAtar is imported only when an env is built; reset, step and
render come from envs.pixel_game.PixelGame.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.pixel_game import FRAME_SIZE, PixelGame

GRID = 10                                              # MinAtar's grid is GRID x GRID cells
MINATAR_GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway", "Seaquest": "seaquest",
                 "SpaceInvaders": "space_invaders"}   # our name -> MinAtar's module name
MINATAR_ACTIONS = ("NOOP", "LEFT", "UP", "RIGHT", "DOWN", "FIRE")   # MinAtar's full action set, by id
SEED_BOUND = 2 ** 31                                   # MinAtar seeds a numpy RandomState, which takes < 2**32

# Colour 0 is the empty cell; colour 1 + c draws channel c (Seaquest has the most channels, 10).
PALETTE = np.array(
    [
        [20, 24, 40], [60, 200, 255], [230, 50, 60], [120, 120, 140], [255, 210, 40], [60, 200, 90],
        [240, 130, 40], [200, 90, 220], [250, 250, 250], [40, 110, 200], [160, 230, 160],
    ],
    dtype=np.uint8,
)
_PIXEL_TO_CELL = np.arange(FRAME_SIZE) * GRID // FRAME_SIZE    # (64,) the grid row / column of each pixel


def _import_minatar():
    try:
        import minatar
    except ImportError as error:
        raise ImportError("MinAtar games need the minatar package: pip install 'dreamgym[minatar]'") from error
    return minatar


def grid_to_frame(state: np.ndarray) -> np.ndarray:
    """(10, 10, C) bool MinAtar state -> (64, 64, 3) uint8 frame (colour of the highest channel set per cell)."""
    channels = state.shape[-1]
    if channels >= len(PALETTE):
        raise ValueError(f"a MinAtar state has at most {len(PALETTE) - 1} channels here, got {channels}")
    colour = (state * np.arange(1, channels + 1)).max(-1)                      # (10, 10) int
    return PALETTE[colour[_PIXEL_TO_CELL][:, _PIXEL_TO_CELL]]


class MinAtarRGBEnv(PixelGame):
    """A MinAtar game with 64x64 RGB frames.

    ## Description
    The MinAtar game `game` (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders) with its own rules,
    sticky actions and difficulty ramp, seeded from `self.np_random`. Each step's 10x10xC channel state is
    drawn by `grid_to_frame`.

    ## Action Space
    `Discrete(n)`: MinAtar's minimal action set for the game (`get_action_meanings()` names it).

    ## Observation Space
    `Box(0, 255, (64, 64, 3), uint8)`, RGB, every pixel a `PALETTE` colour.

    ## Rewards
    MinAtar's.

    ## Episode End
    1. Termination: MinAtar's terminal flag.  2. Truncation: `horizon` steps elapsed.

    ## Arguments
    | name               | type        | default | description                                  |
    |--------------------|-------------|---------|----------------------------------------------|
    | game               | str         | "Breakout" | one of MINATAR_GAMES                     |
    | render_mode        | str or None | None    | "rgb_array" or "human"                       |
    | horizon            | int         | 1000    | steps before `truncated` is True             |
    | sticky_action_prob | float       | 0.1     | MinAtar's chance of repeating the last action |
    | difficulty_ramping | bool        | True    | MinAtar's difficulty ramp                    |

    ## Info
    `state`: the (10, 10, C) bool channel state (MinAtar's ground truth).
    """

    metadata = {**PixelGame.metadata, "render_fps": 15}

    def __init__(self, game: str = "Breakout", render_mode: str | None = None, horizon: int = 1000,
                 sticky_action_prob: float = 0.1, difficulty_ramping: bool = True):
        if game not in MINATAR_GAMES:
            raise ValueError(f"game must be one of {sorted(MINATAR_GAMES)}, got {game!r}")
        super().__init__(f"MinAtar {game}", len(MINATAR_ACTIONS), render_mode, horizon)
        minatar = _import_minatar()
        self.game = game
        self._game = minatar.Environment(MINATAR_GAMES[game], sticky_action_prob=sticky_action_prob,
                                         difficulty_ramping=difficulty_ramping)
        self._actions = list(self._game.minimal_action_set())
        self.action_space = spaces.Discrete(len(self._actions))      # the game's minimal set, not MinAtar's full one

    def get_action_meanings(self) -> list[str]:
        return [MINATAR_ACTIONS[a] for a in self._actions]

    def _start(self) -> None:
        self._game.seed(int(self.np_random.integers(SEED_BOUND)))
        self._game.last_action = 0                     # sticky actions repeat the last action: none yet
        self._game.reset()

    def _advance(self, action: int) -> tuple[float, bool]:
        reward, terminal = self._game.act(self._actions[action])
        return float(reward), bool(terminal)

    def _frame(self) -> np.ndarray:
        return grid_to_frame(self._game.state())

    def _info(self) -> dict[str, Any]:
        return {"state": self._game.state().copy()}
