"""Paint latents: for a kind of cell no DiT draws (two entities in one cell), the one latent the frozen decoder
draws as the recorded pixels of such cells.

A sprite drawn over another leaves only a few of the lower one's pixels showing; the encoder maps those cells close
to the upper sprite's alone, and the decoder draws them, and their mean, mostly as the upper sprite alone
(docs/ablation.md "Overlaps: two sprites in one cell", docs/model.md "Overlap paint"). So the latent a DiT with
`overlap_paint` writes there is fitted instead: starting from the mean encoding, gradient descent on the decoder's
pixel error of the recorded overlap cells, each decoded in its own recorded frame (the decoder's convolutions see the
neighbours).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from train.common.plugins import FrameReader, as_reader
from worldmodel.autoencoder import Autoencoder
from worldmodel.data import Episode


def fit_cell_latent(autoencoder: Autoencoder, frames: np.ndarray, cells: np.ndarray, steps: int = 300,
                    lr: float = 0.05, batch: int = 32, seed: int = 0) -> np.ndarray:
    """(C,) the latent that, put at each frame's `cells` (N,) flat latent cell of uint8 `frames` (N, H, W, 3) in
    place of the frame's own encoding, the decoder (frozen here) draws closest (squared error) to the recorded
    pixels."""
    if len(frames) == 0 or len(frames) != len(cells):
        raise ValueError(f"need recorded frames and one cell each, got {len(frames)} frames and {len(cells)} cells")
    device = next(autoencoder.parameters()).device
    autoencoder = autoencoder.eval().requires_grad_(False)
    with torch.no_grad():
        latents = autoencoder.encode(torch.from_numpy(frames).to(device)).float()            # (N, C, h, w)
        targets = autoencoder.to_float(torch.from_numpy(frames).to(device))                  # (N, 3, H, W) in [-1, 1]
    side, pixels = latents.shape[-1], frames.shape[1] // latents.shape[-1]
    rows, cols = torch.from_numpy(np.asarray(cells) // side), torch.from_numpy(np.asarray(cells) % side)
    mask = torch.zeros(len(frames), 1, side, side, device=device)                             # (N, 1, h, w)
    mask[torch.arange(len(frames)), 0, rows, cols] = 1.0
    pixel_mask = torch.nn.functional.interpolate(mask, scale_factor=pixels, mode="nearest")  # (N, 1, H, W)
    latent = (latents * mask).sum((0, 2, 3)) / mask.sum()                                     # (C,) the mean encoding
    latent = latent.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(len(frames), (min(batch, len(frames)),), generator=generator)
        painted = torch.where(mask[pick] > 0, latent[None, :, None, None], latents[pick])
        error = (autoencoder.decode_float(painted) - targets[pick]) ** 2 * pixel_mask[pick]
        loss = error.sum() / (pixel_mask[pick].sum() * 3)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return latent.detach().cpu().numpy()


def overlap_frames(frames: np.ndarray, cells: np.ndarray, pair: tuple[int, int], limit: int = 512
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` of uint8 `frames` (N, H, W, 3) whose labelled entity cells (N, E) put entities i and j of
    `pair` in one cell, and that cell: ((M, H, W, 3), (M,))."""
    i, j = pair
    picked = np.flatnonzero((cells[:, i] == cells[:, j]) & (cells[:, i] >= 0))[:limit]
    return frames[picked], cells[picked, i]


def recorded_overlaps(episodes: list[Episode], reader: str | FrameReader) -> tuple[np.ndarray, np.ndarray]:
    """The frames of pixel `episodes` where two labelled cells share a cell, and their labelled cells: ((M, H, W, 3)
    uint8, (M, E')). The cells are the frame reader's entities, then the player's where the reader has
    `player_cells` (a DiT's player_channel), in a DiT's drawn-cell order. Only those frames are kept: a recording's
    are hundreds of MB."""
    reader = as_reader(reader)
    frames, cells = [], []
    for episode in episodes:
        labels = reader.cells(episode.frames)                                                # (n+1, E)
        if reader.player_cells is not None:
            labels = np.concatenate([labels, reader.player_cells(episode.frames)[:, None]], axis=1)   # (n+1, E + 1)
        met = np.zeros(len(labels), bool)
        for i, j in itertools.combinations(range(labels.shape[1]), 2):
            met |= (labels[:, i] == labels[:, j]) & (labels[:, i] >= 0)
        frames.append(episode.frames[met])
        cells.append(labels[met])
    return np.concatenate(frames), np.concatenate(cells)
