"""CoinChase's frame labels for training: the plug-in that configs/games/coinchase.yaml names as its `reader`.

A reader module tells the pipeline, from recorded uint8 frames alone, where a game's randomly moving entities are
(train.common.events loads it by module name; docs/model.md "The event model"). It defines:

    cells(frames)         (M, E) int64 each random entity's flat latent cell in each frame (M, 64, 64, 3)
    caught(frames)        optional: (n+1,) bool per frame of one episode, the step into it caught the player
    player_cells(frames)  optional: (M,) int64 the player's flat cell in each frame, -1 where none is seen

CoinChase's random entities are (enemy, coin), read by envs.coinchase_reader. One game cell is one latent cell
(8 pixels, the autoencoder's downsampling).
"""
from __future__ import annotations

import numpy as np

from envs.coinchase import CELLS
from envs.coinchase_reader import read_state


def cells(frames: np.ndarray) -> np.ndarray:
    """(M, 2) int64 the enemy's and the coin's flat cells in uint8 frames (M, 64, 64, 3)."""
    state = read_state(frames)
    rows_cols = np.stack([state.enemy, state.coin], axis=1)                              # (M, 2, 2) row, col
    if (rows_cols < 0).any():
        raise ValueError("a recorded CoinChase frame shows no enemy or no coin; the reader cannot label it")
    return (rows_cols[..., 0] * CELLS + rows_cols[..., 1]).astype(np.int64)


def caught(frames: np.ndarray) -> np.ndarray:
    """(n+1,) bool per frame of one episode's uint8 frames (n+1, 64, 64, 3): the step into this frame caught the player
    (the enemy on the player's cell, or the two swapped cells), as the game's `caught` says — with `lethal=False` play
    too, whose episodes go on after a catch and whose terminations never say so."""
    state = read_state(frames)
    enemy, player = state.enemy, state.player                                             # (n+1, 2) row, col
    hit = (enemy == player).all(1)
    hit[1:] |= (enemy[1:] == player[:-1]).all(1) & (enemy[:-1] == player[1:]).all(1)
    return hit & (player >= 0).all(1)


def player_cells(frames: np.ndarray) -> np.ndarray:
    """(M,) int64 the player's flat cell in each uint8 frame (M, 64, 64, 3); -1 where the reader finds none."""
    player = read_state(frames).player
    return np.where((player >= 0).all(1), player[:, 0] * CELLS + player[:, 1], -1).astype(np.int64)
