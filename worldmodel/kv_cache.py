"""KV cache: preallocated per-layer ring buffers of keys/values over frames, batched.

Slot layout per batch element: `sink` slots that keep the first frames of an episode forever,
then `window` ring slots for the most recent frames. Keys are stored *unrotated*; the attention
rotates them by their distance to the query frame at read time, so positions stay inside the
trained range at any horizon. Each element has its own frame counter, so one element can be reset
(and re-primed) while the others keep their history. The bookkeeping (which frame each slot holds,
frames seen per element) is device tensors too, so a step needs no host round trip and can be
replayed as a CUDA graph; the per-frame cost is constant in the horizon (fixed-size buffers, no
concatenation).

Besides keys and values, each element keeps its last written frame's latent (`previous`), which a
model with previous-frame input reads as the frame before the next one (zeros after a reset), and its
last drawn entity cells (`cells`, -1 after a reset), which bound where a model with `event_reach` draws next.

Dimensions: B batch, H heads, F = sink + window frame slots, N tokens per frame, Dh head dim,
C, h, w the latent frame's channels and size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EMPTY = -1  # slot_time of a slot that holds nothing


@dataclass
class LayerKVCache:
    """One layer's keys and values: k, v (B, H, F, N, Dh)."""
    k: torch.Tensor
    v: torch.Tensor

    def read(self, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values flattened over slots: (b, H, F*N, Dh) for the selected rows."""
        k, v = (self.k, self.v) if rows is None else (self.k[rows], self.v[rows])
        b, h, f, n, d = k.shape
        return k.reshape(b, h, f * n, d), v.reshape(b, h, f * n, d)

    def write(self, rows: torch.Tensor, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store T frames per row: rows (R,), slots (R, T); k, v (R, H, T, N, Dh).

        Detached: the cache never carries gradients (Self Forcing trains through the denoising
        step only; context is written by a no-grad clean pass)."""
        index = (rows[:, None], slice(None), slots)                 # selects (R, T, H, N, Dh)
        self.k[index] = k.detach().transpose(1, 2).to(self.k.dtype)
        self.v[index] = v.detach().transpose(1, 2).to(self.v.dtype)


class KVCache:
    """Batched rolling KV cache for all layers of a causal DiT."""

    def __init__(self, batch: int, layers: int, heads: int, head_dim: int, tokens_per_frame: int,
                 window: int, sink: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 latent_shape: tuple[int, ...] = (), drawn_cells: int = 0):
        if window < 1 or sink < 0:
            raise ValueError(f"need window >= 1 and sink >= 0, got window={window}, sink={sink}")
        self.batch, self.window, self.sink = batch, window, sink
        self.tokens_per_frame = tokens_per_frame
        self.device = torch.device(device)
        slots = sink + window
        shape = (batch, heads, slots, tokens_per_frame, head_dim)
        self.layers = [LayerKVCache(torch.zeros(shape, device=device, dtype=dtype),
                                    torch.zeros(shape, device=device, dtype=dtype)) for _ in range(layers)]
        self.previous = torch.zeros((batch, *latent_shape), device=device, dtype=dtype)   # (B, C, h, w) last frame
        self.cells = torch.full((batch, drawn_cells), -1, dtype=torch.int64, device=device)  # (B, R) last drawn cells
        # Bookkeeping lives on the device too: a step reads and updates it without a host round trip (CUDA graphs).
        self.slot_time = torch.full((batch, slots), EMPTY, dtype=torch.int64, device=device)  # frame index per slot
        self.frames_seen = torch.zeros(batch, dtype=torch.int64, device=device)               # next frame index
        self.all_rows = torch.arange(batch, device=device)                                    # (B,) index of every row

    @property
    def slots(self) -> int:
        return self.sink + self.window

    def row_index(self, rows: np.ndarray | list[int] | torch.Tensor | None) -> torch.Tensor:
        """Rows as a device index tensor (None: every row, without a host-to-device copy)."""
        if rows is None:
            return self.all_rows
        return torch.as_tensor(np.asarray(rows, dtype=np.int64) if not torch.is_tensor(rows) else rows,
                               device=self.device)

    def reset(self, rows: np.ndarray | list[int] | torch.Tensor | None = None) -> None:
        """Forget the history of the given batch elements (all when None); the others are untouched."""
        index = self.row_index(rows)
        self.slot_time[index] = EMPTY
        self.frames_seen[index] = 0
        if self.previous.dim() > 1:
            self.previous[index] = 0.0
        self.cells[index] = -1

    def copy_rows(self, rows: np.ndarray | torch.Tensor, source: KVCache,
                  source_rows: np.ndarray | torch.Tensor) -> None:
        """Make `rows` of this cache hold exactly what `source_rows` of `source` hold (keys, values, previous frame,
        slot bookkeeping): a primed row restored without running the model. Same shapes and layout required."""
        dst, src = self.row_index(rows), source.row_index(source_rows)
        if ((source.slots, source.tokens_per_frame, len(source.layers))
                != (self.slots, self.tokens_per_frame, len(self.layers))):
            raise ValueError("copy_rows needs a cache of the same layers, slots and tokens per frame")
        for mine, theirs in zip(self.layers, source.layers, strict=True):
            mine.k[dst] = theirs.k[src]
            mine.v[dst] = theirs.v[src]
        self.previous[dst] = source.previous[src]
        self.cells[dst] = source.cells[src]
        self.slot_time[dst] = source.slot_time[src]
        self.frames_seen[dst] = source.frames_seen[src]

    def slot_for(self, frame: torch.Tensor) -> torch.Tensor:
        """Slot that frame index `frame` (per element) is written to."""
        ring = self.sink + (frame - self.sink) % self.window
        return torch.where(frame < self.sink, frame, ring)

    def visible(self, rows: np.ndarray | torch.Tensor, chunk_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For queries whose chunk starts at frame `chunk_start` (R,): which slots they may read and
        each slot's distance (in frames) to the chunk start. Returns valid (R, F) bool, distance (R, F) int64."""
        times = self.slot_time[self.row_index(rows)]       # (R, F)
        distance = chunk_start[:, None] - times            # (R, F)
        valid = (times != EMPTY) & (distance >= 1)
        return valid, torch.where(valid, distance, 0)

    def advance(self, rows: np.ndarray | torch.Tensor, frames: int) -> torch.Tensor:
        """Reserve the next `frames` frame indices for each row; returns them (R, frames) and marks their slots."""
        rows = self.row_index(rows)
        start = self.frames_seen[rows]
        times = start[:, None] + torch.arange(frames, device=self.device)[None, :]      # (R, frames)
        self.slot_time[rows[:, None], self.slot_for(times)] = times
        self.frames_seen[rows] = start + frames
        return times
