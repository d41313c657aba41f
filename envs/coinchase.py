"""CoinChase: the bundled 64x64 game that dreamgym's world models learn.

Owns the real game's rules, its drawing (numpy only, a fixed palette) and its Gymnasium spec (reset, step and
render come from envs.pixel_game.PixelGame). It knows nothing of models. Grid coordinates are (row, col) over
CELLS x CELLS cells of CELL_PX pixels; row 0 is the score bar, rows 1..CELLS-1 are the maze.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np

from envs.pixel_game import PixelGame
from envs.pixels import DIGIT_MASKS as DIGIT_MASKS   # the score's font, also read by envs.coinchase_reader
from envs.pixels import bar_frame, draw_number, number_left

CELL_PX = 8          # pixels per grid cell; also the autoencoder's downsampling, so a cell is a latent
CELLS = 8            # grid is CELLS x CELLS cells -> 64 x 64 pixels
FRAME_SIZE = CELL_PX * CELLS
HUD_ROWS = 1         # rows of cells reserved for the score bar

# The palette: every pixel the game draws is one of these colours (RGB, uint8).
PALETTE = np.array(
    [
        [20, 24, 40],     # 0 floor
        [110, 110, 130],  # 1 wall
        [60, 200, 255],   # 2 player
        [255, 210, 40],   # 3 coin
        [230, 50, 60],    # 4 enemy
        [0, 0, 0],        # 5 score bar
        [250, 250, 250],  # 6 score digits
    ],
    dtype=np.uint8,
)
FLOOR, WALL, PLAYER, COIN, ENEMY, BAR, DIGIT = range(len(PALETTE))

# Maze walls (row, col) inside the play area; the frame border is an implicit wall.
WALLS = frozenset({(2, 2), (2, 5), (3, 2), (4, 4), (4, 5), (5, 1), (6, 3), (6, 6)})


class Action(IntEnum):
    """CoinChase's action ids (`Discrete(5)`); an Action is an int, so `env.step(Action.UP)` works."""
    NOOP = 0    # stay
    UP = 1
    DOWN = 2
    LEFT = 3
    RIGHT = 4


ACTION_NAMES = tuple(action.name.lower() for action in Action)   # ("noop", "up", "down", "left", "right")
ACTION_DELTAS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)   # (row, col) per Action

# Sprite masks (CELL_PX x CELL_PX booleans) drawn into a cell in the sprite's colour.
_yy, _xx = np.mgrid[0:CELL_PX, 0:CELL_PX]
_c = (CELL_PX - 1) / 2
SPRITES = {
    PLAYER: (np.abs(_yy - _c) <= 3) & (np.abs(_xx - _c) <= 3) & ~((_yy == 3) & (np.abs(_xx - _c) <= 1.5)),
    COIN: (np.abs(_yy - _c) + np.abs(_xx - _c)) <= 3.0,
    ENEMY: ((np.abs(_yy - _xx) <= 1) | (np.abs(_yy + _xx - 2 * _c) <= 1)),
}

SCORE_DIGITS = 3     # the bar shows the score modulo 1000, zero padded, in the `DIGIT_MASKS` font
SCORE_TOP, SCORE_LEFT = 1, number_left(SCORE_DIGITS, FRAME_SIZE)


def free_cells() -> list[tuple[int, int]]:
    """All walkable cells of the maze, row-major."""
    return [(r, c) for r in range(HUD_ROWS, CELLS) for c in range(CELLS) if (r, c) not in WALLS]


def is_free(cell: tuple[int, int]) -> bool:
    r, c = cell
    return HUD_ROWS <= r < CELLS and 0 <= c < CELLS and (r, c) not in WALLS


class CoinChaseEnv(PixelGame):
    """Collect coins while a red enemy hunts you.

    ## Description
    A 64x64 top-down maze of 8x8 cells (8 pixels each). Row 0 is a black score bar; rows 1-7 are
    the maze with fixed grey walls. The blue player moves one cell per step. A yellow coin sits on a
    random free cell and respawns elsewhere when collected. A red enemy moves with probability
    `enemy_move_prob` per step (it is slower than the player); when it moves, with probability
    `chase_prob` it steps toward the player, otherwise it takes a random move (or stays).
    The player's motion is deterministic given the actions; the coin and the enemy are random.

    ## Action Space
    `Discrete(5)`:

    | id | key          | meaning    |
    |----|--------------|------------|
    | 0  | (none)       | stay       |
    | 1  | Up / W       | move up    |
    | 2  | Down / S     | move down  |
    | 3  | Left / A     | move left  |
    | 4  | Right / D    | move right |

    A move into a wall or the frame border leaves the player where it is.

    ## Observation Space
    `Box(0, 255, (64, 64, 3), uint8)`, RGB, height x width x channel. Every pixel is one of the
    colours in `PALETTE` (floor, wall, player, coin, enemy, score bar, digits).

    ## Rewards
    +1 on the step the player enters the coin's cell, 0 otherwise.

    ## Starting State
    Player, coin and enemy on distinct random free cells drawn from `self.np_random`; the enemy
    starts at Manhattan distance >= 4 from the player. Score 0.

    ## Episode End
    1. Termination: the enemy and the player share a cell, or swap cells in one step ("caught";
       with `lethal=False` the episode goes on and only `env.caught` says so — for comparing a
       world model with the real game over horizons no real episode survives).
    2. Truncation: `horizon` steps elapsed.

    ## Arguments
    | name        | type        | default | description                                   |
    |-------------|-------------|---------|-----------------------------------------------|
    | render_mode | str or None | None    | "rgb_array" returns the frame; "human" opens a pygame window |
    | horizon     | int         | 1000    | steps before `truncated` is True              |
    | chase_prob  | float       | 0.5     | chance that a moving enemy steps toward the player |
    | enemy_move_prob | float   | 0.5     | chance per step that the enemy moves at all   |
    | lethal      | bool        | True    | whether being caught ends the episode         |

    ## Info
    `player`, `coin`, `enemy`: int64 arrays (row, col) of the cells; `score`: int64 coins so far.

    ## Version History
    v0: first release.
    """

    metadata = {**PixelGame.metadata, "render_fps": 15}

    def __init__(self, render_mode: str | None = None, horizon: int = 1000, chase_prob: float = 0.5,
                 enemy_move_prob: float = 0.5, lethal: bool = True):
        super().__init__("CoinChase", len(ACTION_NAMES), render_mode, horizon)
        for name, value in (("chase_prob", chase_prob), ("enemy_move_prob", enemy_move_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.chase_prob = chase_prob
        self.enemy_move_prob = enemy_move_prob
        self.lethal = lethal
        self.caught = False           # the last step ended with the enemy on (or swapping with) the player
        self._free = free_cells()
        self._background = self._draw_background()
        self.player = self.coin = self.enemy = (0, 0)
        self.score = 0

    def get_action_meanings(self) -> list[str]:
        """The action names, ALE's convention (NOOP, UP, DOWN, LEFT, RIGHT): what tools read a game's keys from."""
        return [action.name for action in Action]

    # ---------------------------------------------------------------- rules
    def _start(self) -> None:
        rng = self.np_random
        self.player = self._free[rng.integers(len(self._free))]
        far = [c for c in self._free if abs(c[0] - self.player[0]) + abs(c[1] - self.player[1]) >= 4]
        self.enemy = far[rng.integers(len(far))]
        self.coin = self._random_free_cell(exclude={self.player, self.enemy})
        self.score = 0
        self.caught = False

    def _advance(self, action: int) -> tuple[float, bool]:
        old_player = self.player
        self.player = self._moved(self.player, action)
        reward = 0.0
        if self.player == self.coin:
            reward = 1.0
            self.score += 1
            self.coin = self._random_free_cell(exclude={self.player, self.enemy})
        old_enemy = self.enemy
        self.enemy = self._enemy_move()
        self.caught = self.enemy == self.player or (self.enemy == old_player and old_enemy == self.player)
        return reward, self.caught and self.lethal

    def _moved(self, cell: tuple[int, int], action: int) -> tuple[int, int]:
        dr, dc = ACTION_DELTAS[action]
        target = (cell[0] + int(dr), cell[1] + int(dc))
        return target if is_free(target) else cell

    def _enemy_move(self) -> tuple[int, int]:
        rng = self.np_random
        if rng.random() >= self.enemy_move_prob:
            return self.enemy
        options = [self._moved(self.enemy, a) for a in range(len(ACTION_NAMES))]
        if rng.random() < self.chase_prob:
            dist = [abs(r - self.player[0]) + abs(c - self.player[1]) for r, c in options]
            best = min(dist)
            options = [cell for cell, d in zip(options, dist, strict=True) if d == best]
        return options[rng.integers(len(options))]

    def next_cell_probabilities(self, action: int) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
        """The exact distributions of the enemy's and the coin's cells after `step(action)` from the current state,
        {cell: probability} each (what a world model's entity events should sample; the state is not changed)."""
        player = self._moved(self.player, int(action))
        coin: dict[tuple[int, int], float] = {self.coin: 1.0}
        if player == self.coin:
            choices = [c for c in self._free if c not in {player, self.enemy}]
            coin = {c: 1.0 / len(choices) for c in choices}
        options = [self._moved(self.enemy, a) for a in range(len(ACTION_NAMES))]
        dist = [abs(r - player[0]) + abs(c - player[1]) for r, c in options]
        chase = [cell for cell, d in zip(options, dist, strict=True) if d == min(dist)]
        enemy: dict[tuple[int, int], float] = {self.enemy: 1.0 - self.enemy_move_prob}
        for cells, weight in ((chase, self.chase_prob), (options, 1.0 - self.chase_prob)):
            for cell in cells:
                enemy[cell] = enemy.get(cell, 0.0) + self.enemy_move_prob * weight / len(cells)
        return enemy, coin

    def _random_free_cell(self, exclude: set[tuple[int, int]]) -> tuple[int, int]:
        choices = [c for c in self._free if c not in exclude]
        return choices[self.np_random.integers(len(choices))]

    def _info(self) -> dict[str, Any]:
        return {
            "player": np.array(self.player, dtype=np.int64),
            "coin": np.array(self.coin, dtype=np.int64),
            "enemy": np.array(self.enemy, dtype=np.int64),
            "score": np.int64(self.score),
        }

    # -------------------------------------------------------------- drawing
    @staticmethod
    def _draw_background() -> np.ndarray:
        frame = bar_frame(PALETTE[FLOOR], PALETTE[BAR], HUD_ROWS * CELL_PX, FRAME_SIZE)
        for r, c in WALLS:
            frame[r * CELL_PX:(r + 1) * CELL_PX, c * CELL_PX:(c + 1) * CELL_PX] = PALETTE[WALL]
        return frame

    def _frame(self) -> np.ndarray:
        frame = self._background.copy()  # (64, 64, 3) uint8
        for colour, cell in ((COIN, self.coin), (PLAYER, self.player), (ENEMY, self.enemy)):
            block = frame[cell[0] * CELL_PX:(cell[0] + 1) * CELL_PX, cell[1] * CELL_PX:(cell[1] + 1) * CELL_PX]
            block[SPRITES[colour]] = PALETTE[colour]
        draw_number(frame, self.score, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT, PALETTE[DIGIT])
        return frame
