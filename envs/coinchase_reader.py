"""A deterministic reader of CoinChase's game state from frames: entity cells, walls, score.

Owns turning (N, 64, 64, 3) uint8 frames into `GameState` — which cells hold the player, the coin
and the enemy, whether the maze's walls are as the game draws them, whether an entity sits where
none can walk, and the score in the bar. No learning: every pixel takes its nearest `PALETTE`
colour, then each 8x8 cell's pixels of each entity colour are counted against the sprite masks
and the score's digits are matched against the `DIGIT_MASKS` font where the game draws them.
It is exact on real frames (tests/test_coinchase_reader.py), so on generated frames every
disagreement with the real game is the model's, not the reader's.

Overlaps: the game draws coin, then player, then enemy into a cell, so a later sprite hides part of
an earlier one (the enemy on a caught player leaves 8 of the player's 32 pixels; on the coin, 8 of
its 24). A cell holds a sprite if at least half of the pixels the sprite still shows there — given
the sprites drawn over it in that cell — have its colour. Real frames with the enemy on the player
or the coin are therefore read exactly too. (The player never shares the coin's cell in the real
game: the coin respawns as soon as it is reached.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.coinchase import (CELL_PX, CELLS, COIN, DIGIT, DIGIT_MASKS, ENEMY, FRAME_SIZE, HUD_ROWS, PALETTE, PLAYER,
                            SCORE_DIGITS, SPRITES, WALL, WALLS)

ENTITIES = (COIN, PLAYER, ENEMY)      # in drawing order: a later sprite is drawn over an earlier one
WALL_TOLERANCE = CELL_PX              # off-colour pixels a cell may have and still count as wall / not wall
DIGIT_TOLERANCE = 1                   # mismatching pixels a digit may have (if no other glyph matches as well)
CHUNK = 256                           # frames classified at once (bounds the memory of the distance matrix)

_GLYPHS = np.stack([DIGIT_MASKS[str(d)] for d in range(10)]).reshape(10, -1)      # (10, 15) bool
_DIGIT_TOP = 1
_DIGIT_LEFT = FRAME_SIZE - 4 * SCORE_DIGITS - 1                                    # as CoinChaseEnv._frame draws
_WALL_GRID = np.zeros((CELLS, CELLS), bool)
_WALL_GRID[tuple(np.array(sorted(WALLS)).T)] = True
_MAZE = np.zeros((CELLS, CELLS), bool)
_MAZE[HUD_ROWS:] = True
_WALKABLE = _MAZE & ~_WALL_GRID


@dataclass
class GameState:
    """What one batch of N frames shows; cells are (row, col), (-1, -1) where the entity is not seen."""
    player: np.ndarray          # (N, 2) int64 the cell that most fully shows the player sprite
    coin: np.ndarray            # (N, 2) int64
    enemy: np.ndarray           # (N, 2) int64
    n_players: np.ndarray       # (N,) int64 cells that show a player
    n_coins: np.ndarray         # (N,) int64
    n_enemies: np.ndarray       # (N,) int64
    walls_intact: np.ndarray    # (N,) bool every WALLS cell is wall, no other maze cell is
    entity_in_wall: np.ndarray  # (N,) bool some entity sits in a wall cell or in the score bar
    score: np.ndarray           # (N,) int64 the score bar's number, -1 if a digit matches no glyph

    @property
    def one_of_each(self) -> np.ndarray:
        """(N,) bool exactly one player, one coin and one enemy."""
        return (self.n_players == 1) & (self.n_coins == 1) & (self.n_enemies == 1)


def _visible_pixels() -> dict[int, np.ndarray]:
    """Per entity: the pixels its sprite shows for each combination of later sprites present in its cell.

    {entity: (2,) * k int array} indexed by the presence (0/1) of each of the k entities drawn after it."""
    visible = {}
    for i, entity in enumerate(ENTITIES):
        later = ENTITIES[i + 1:]
        table = np.zeros((2,) * len(later), np.int64)
        for present in np.ndindex(table.shape):
            hidden = np.zeros_like(SPRITES[entity])
            for on, other in zip(present, later):
                hidden |= bool(on) & SPRITES[other]
            table[present] = (SPRITES[entity] & ~hidden).sum()
        visible[entity] = table
    return visible


VISIBLE = _visible_pixels()


def palette_labels(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) int64 index of each pixel's nearest PALETTE colour (ties: lowest index)."""
    colours = PALETTE.astype(np.float32)                                     # (P, 3); float32 is exact here
    norms = (colours ** 2).sum(1)
    labels = np.empty(frames.shape[:-1], np.int64)
    for start in range(0, len(frames), CHUNK):
        x = frames[start:start + CHUNK].reshape(-1, 3).astype(np.float32)    # (M, 3)
        distance = norms - 2.0 * (x @ colours.T)                             # (M, P), |x|^2 dropped
        labels[start:start + CHUNK] = distance.argmin(1).reshape(frames[start:start + CHUNK].shape[:-1])
    return labels


def cell_counts(labels: np.ndarray, colour: int) -> np.ndarray:
    """(N, H, W) labels -> (N, CELLS, CELLS) pixels of `colour` in each cell."""
    n = len(labels)
    return (labels == colour).reshape(n, CELLS, CELL_PX, CELLS, CELL_PX).sum((2, 4))


def _entity_cells(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Per entity: (N, CELLS, CELLS) fill (the fraction of its visible pixels shown) where present, else 0."""
    fills: dict[int, np.ndarray] = {}
    present: dict[int, np.ndarray] = {}
    for i in reversed(range(len(ENTITIES))):                                # enemy first: nothing is drawn over it
        entity = ENTITIES[i]
        index = tuple(present[other].astype(np.int64) for other in ENTITIES[i + 1:])
        visible = VISIBLE[entity][index] if index else np.full(labels.shape[:1] + (CELLS, CELLS), VISIBLE[entity][()])
        count = cell_counts(labels, entity)
        present[entity] = (visible > 0) & (2 * count >= visible)
        fills[entity] = np.where(present[entity], count / np.maximum(visible, 1), 0.0)
    return fills


def _strongest(fill: np.ndarray) -> np.ndarray:
    """(N, CELLS, CELLS) fill -> (N, 2) int64 cell of the largest fill, (-1, -1) where no cell is present."""
    flat = fill.reshape(len(fill), -1)
    best = flat.argmax(1)
    cells = np.stack([best // CELLS, best % CELLS], 1).astype(np.int64)
    cells[flat.max(1) <= 0] = -1
    return cells


def walls_intact(labels: np.ndarray) -> np.ndarray:
    """(N,) bool: every WALLS cell is wall-coloured and no other maze cell is, each up to WALL_TOLERANCE pixels."""
    walls = cell_counts(labels, WALL)                                        # (N, CELLS, CELLS)
    broken = _WALL_GRID & (walls < CELL_PX * CELL_PX - WALL_TOLERANCE)
    spurious = _WALKABLE & (walls > WALL_TOLERANCE)
    return ~(broken | spurious).any((1, 2))


def read_score(labels: np.ndarray) -> np.ndarray:
    """(N, H, W) labels -> (N,) int64 score drawn in the bar; -1 where a digit matches no glyph well."""
    score = np.zeros(len(labels), np.int64)
    for i in range(SCORE_DIGITS):
        x = _DIGIT_LEFT + 4 * i
        lit = (labels[:, _DIGIT_TOP:_DIGIT_TOP + 5, x:x + 3] == DIGIT).reshape(len(labels), 1, -1)   # (N, 1, 15)
        mismatch = (lit != _GLYPHS).sum(2)                                   # (N, 10)
        best = mismatch.argmin(1)
        low = mismatch.min(1)
        unique = (mismatch == low[:, None]).sum(1) == 1
        readable = unique & (low <= DIGIT_TOLERANCE)
        score = np.where(readable & (score >= 0), score * 10 + best, -1)
    return score


def read_state(frames: np.ndarray) -> GameState:
    """(N, 64, 64, 3) uint8 frames -> their GameState."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (FRAME_SIZE, FRAME_SIZE, 3):
        raise ValueError(f"expected CoinChase frames (N, {FRAME_SIZE}, {FRAME_SIZE}, 3), got {frames.shape}")
    labels = palette_labels(frames)
    fills = _entity_cells(labels)
    in_wall = np.zeros(len(frames), bool)
    for fill in fills.values():
        in_wall |= ((fill > 0) & ~_WALKABLE).any((1, 2))
    counts = {entity: (fill > 0).sum((1, 2)).astype(np.int64) for entity, fill in fills.items()}
    return GameState(player=_strongest(fills[PLAYER]), coin=_strongest(fills[COIN]), enemy=_strongest(fills[ENEMY]),
                     n_players=counts[PLAYER], n_coins=counts[COIN], n_enemies=counts[ENEMY],
                     walls_intact=walls_intact(labels), entity_in_wall=in_wall, score=read_score(labels))


def read_player_and_score(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reader as train.eval's `Reader`: player cells (N, 2) and scores (N,) (-1 unreadable)."""
    state = read_state(frames)
    return state.player, state.score
