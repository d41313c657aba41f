"""Snake: a snake on a 4-pixel grid eats food that respawns on a uniformly random free cell.

Owns the game's rules, its drawing (numpy only, a fixed palette) and its Gymnasium spec (reset, step and
render come from envs.pixel_game.PixelGame); knows nothing of models. Grid coordinates are (row, col) over
ROWS x COLS cells of CELL_PX pixels below an 8-pixel score bar; the outer ring of cells is wall, so the snake
and the food live on the 12 x 14 inner cells.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from envs.pixel_game import PixelGame
from envs.pixels import SCORE_DIGITS, SCORE_LEFT, SCORE_TOP, bar_frame, draw_number

FRAME_SIZE = 64
HUD_PX = 8                       # rows 0..7: the score bar
CELL_PX = 4                      # a grid cell is 4 x 4 pixels: half a world-model latent cell
COLS = FRAME_SIZE // CELL_PX     # 16
ROWS = (FRAME_SIZE - HUD_PX) // CELL_PX   # 14
START_LENGTH = 3                 # head + 2 body cells, heading right from START_HEAD
START_HEAD = (ROWS // 2, COLS // 2)

PALETTE = np.array(
    [
        [20, 24, 40],     # 0 floor (also the head's eye)
        [110, 110, 130],  # 1 wall
        [60, 200, 90],    # 2 body
        [60, 200, 255],   # 3 head
        [255, 210, 40],   # 4 food
        [230, 50, 60],    # 5 dead head
        [0, 0, 0],        # 6 score bar
        [250, 250, 250],  # 7 digits
    ],
    dtype=np.uint8,
)
FLOOR, WALL, BODY, HEAD, FOOD, DEAD, BAR, DIGIT = range(len(PALETTE))
ACTION_MEANINGS = ("NOOP", "UP", "DOWN", "LEFT", "RIGHT")
UP, DOWN, LEFT, RIGHT = 1, 2, 3, 4                     # directions are the action ids of the moves
DELTAS = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}

# Sprites (CELL_PX x CELL_PX booleans). The head's eye: two floor pixels on the edge it faces.
_yy, _xx = np.mgrid[0:CELL_PX, 0:CELL_PX]
FOOD_SPRITE = ~(((_yy == 0) | (_yy == CELL_PX - 1)) & ((_xx == 0) | (_xx == CELL_PX - 1)))    # corners cut
EYES = {UP: (_yy == 0) & (_xx >= 1) & (_xx <= 2), DOWN: (_yy == CELL_PX - 1) & (_xx >= 1) & (_xx <= 2),
        LEFT: (_xx == 0) & (_yy >= 1) & (_yy <= 2), RIGHT: (_xx == CELL_PX - 1) & (_yy >= 1) & (_yy <= 2)}
WALL_GRID = np.zeros((ROWS, COLS), bool)
WALL_GRID[[0, -1]] = True
WALL_GRID[:, [0, -1]] = True


def turn(direction: int, action: int) -> int:
    """The heading after `action`: a move that is not a reversal, else the old heading (NOOP keeps it)."""
    return action if action in DELTAS and action != OPPOSITE[direction] else direction


def cell_index(cell: tuple[int, int]) -> int:
    """Row-major index of a grid cell, in [0, ROWS * COLS)."""
    return cell[0] * COLS + cell[1]


def food_seeking_action(info: dict[str, Any]) -> int:
    """A scripted player: a move that does not die at once, preferring one that closes the distance to the food
    (from `info`); NOOP when every move dies."""
    head, food = tuple(int(v) for v in info["head"]), tuple(int(v) for v in info["food"])
    body = {tuple(int(v) for v in cell) for cell in info["body"][:-1]}       # the tail moves away
    options = []
    for move in (UP, DOWN, LEFT, RIGHT):
        if move == OPPOSITE[int(info["direction"])]:
            continue
        cell = (head[0] + DELTAS[move][0], head[1] + DELTAS[move][1])
        if not WALL_GRID[cell] and cell not in body:
            options.append((abs(cell[0] - food[0]) + abs(cell[1] - food[1]), move))
    return min(options)[1] if options else 0


class SnakeEnv(PixelGame):
    """Steer a growing snake to food on a walled grid.

    ## Description
    A 64x64 frame: rows 0-7 are a black bar with the score as three digits; below, a 16 x 14 grid of
    4x4-pixel cells whose outer ring is grey wall. The snake (a blue head with a dark eye on the side it
    faces, a green body) moves one cell per step. Entering the yellow food's cell pays +1 and grows the
    snake by one cell, and the food reappears on a cell chosen uniformly among all free inner cells (up to
    165 outcomes). Hitting a wall or the body ends the episode: the head stays and turns red. The snake
    is deterministic given the actions; the food's cells are random.

    ## Action Space
    `Discrete(5)`: 0 NOOP (keep heading), 1 UP, 2 DOWN, 3 LEFT, 4 RIGHT. A reversal onto the neck is ignored.

    ## Observation Space
    `Box(0, 255, (64, 64, 3), uint8)`, RGB, every pixel a `PALETTE` colour.

    ## Rewards
    +1 on the step the head enters the food's cell, 0 otherwise.

    ## Starting State
    Length 3, head at (7, 8) heading right, body to its left; score 0; the food on a uniformly random
    free cell drawn from `self.np_random`.

    ## Episode End
    1. Termination: the head would enter a wall or a body cell (the tail's cell is free when the snake
       does not grow that step), or the snake fills every inner cell.
    2. Truncation: `horizon` steps elapsed.

    ## Arguments
    | name        | type        | default | description                                   |
    |-------------|-------------|---------|-----------------------------------------------|
    | render_mode | str or None | None    | "rgb_array" returns the frame; "human" opens a pygame window |
    | horizon     | int         | 1000    | steps before `truncated` is True              |

    ## Info
    `head`, `food` int64 (row, col); `body` int64 (L-1, 2) cells from neck to tail; `direction` int64
    (the action id of the heading); `score` int64; `dead` bool.

    ## Version History
    v0: first release.
    """

    metadata = {**PixelGame.metadata, "render_fps": 10}

    def __init__(self, render_mode: str | None = None, horizon: int = 1000):
        super().__init__("Snake", len(ACTION_MEANINGS), render_mode, horizon)
        self._background = self._draw_background()
        self.snake: deque[tuple[int, int]] = deque()     # head first
        self.food: tuple[int, int] = (0, 0)
        self.direction, self.score, self.dead = RIGHT, 0, False

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    # ---------------------------------------------------------------- rules
    def _start(self) -> None:
        row, col = START_HEAD
        self.snake = deque((row, col - i) for i in range(START_LENGTH))
        self.direction, self.score, self.dead = RIGHT, 0, False
        self.food = self._random_free_cell()

    def _advance(self, action: int) -> tuple[float, bool]:
        self.direction = turn(self.direction, action)
        dr, dc = DELTAS[self.direction]
        head = (self.snake[0][0] + dr, self.snake[0][1] + dc)
        grows = head == self.food
        blocked = set(self.snake) if grows else set(list(self.snake)[:-1])   # the tail moves away unless it grows
        reward, full = 0.0, False
        if WALL_GRID[head] or head in blocked:
            self.dead = True
        else:
            self.snake.appendleft(head)
            if grows:
                reward, self.score = 1.0, self.score + 1
                full = len(self.snake) == int((~WALL_GRID).sum())
                if not full:
                    self.food = self._random_free_cell()
            else:
                self.snake.pop()
        return reward, self.dead or full

    def free_cells(self) -> list[tuple[int, int]]:
        """Inner cells the snake does not cover, row-major: where the food may appear."""
        taken = set(self.snake)
        return [(r, c) for r in range(1, ROWS - 1) for c in range(1, COLS - 1) if (r, c) not in taken]

    def _random_free_cell(self) -> tuple[int, int]:
        free = self.free_cells()
        return free[int(self.np_random.integers(len(free)))]

    def _info(self) -> dict[str, Any]:
        return {"head": np.array(self.snake[0], np.int64), "body": np.array(list(self.snake)[1:], np.int64),
                "food": np.array(self.food, np.int64), "direction": np.int64(self.direction),
                "score": np.int64(self.score), "dead": self.dead}

    # -------------------------------------------------------------- drawing
    @staticmethod
    def _draw_background() -> np.ndarray:
        frame = bar_frame(PALETTE[FLOOR], PALETTE[BAR], HUD_PX, FRAME_SIZE)
        walls = np.repeat(np.repeat(WALL_GRID, CELL_PX, 0), CELL_PX, 1)           # (56, 64)
        frame[HUD_PX:][walls] = PALETTE[WALL]
        return frame

    def _frame(self) -> np.ndarray:
        frame = self._background.copy()                                          # (64, 64, 3)
        draw_number(frame, self.score, SCORE_DIGITS, SCORE_TOP, SCORE_LEFT, PALETTE[DIGIT])
        self._cell(frame, self.food)[FOOD_SPRITE] = PALETTE[FOOD]
        for cell in list(self.snake)[1:]:
            self._cell(frame, cell)[:] = PALETTE[BODY]
        head = self._cell(frame, self.snake[0])
        head[:] = PALETTE[DEAD if self.dead else HEAD]
        head[EYES[self.direction]] = PALETTE[FLOOR]
        return frame

    @staticmethod
    def _cell(frame: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
        """The (CELL_PX, CELL_PX, 3) view of a grid cell's pixels."""
        r, c = cell
        return frame[HUD_PX + r * CELL_PX:HUD_PX + (r + 1) * CELL_PX, c * CELL_PX:(c + 1) * CELL_PX]
