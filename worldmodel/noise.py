"""Per-row reproducible Gaussian noise for batched rollouts, made on the device in one batched pass.

`RowNoise` is the rollout's noise source (`worldmodel.rollout.NoiseSource`) for a batch of
independent dreams. Each row has a seed and a draw counter; a draw of shape (R, ...) gives row r
the values of a counter-based generator at (seed_r, counter_r, element index), then advances the
row's counter. So a row's noise depends only on its own seed and how many draws it has made: N
batched dreams reproduce N single ones, whatever else shares the batch or is reset beside them.

Why not one torch.Generator per row (STREAM_VERSION 1): that is one kernel launch per row per
draw, 5 draws per frame, so a batch of 64 launched 320 tiny kernels per frame on a GPU; and a
torch.Generator's state lives on the host, so a step that draws from it cannot be replayed as a
CUDA graph. Here every draw is a few elementwise kernels over the whole batch, and seeds and
counters are device tensors updated in place: the env step can be captured and replayed.

The generator: a 32-bit integer hash (xor-shift / multiply rounds, multipliers below 2**31 and
every product masked to 32 bits, so nothing overflows int64 on any backend) of (seed, counter,
index), 23 bits of it as a uniform in (0, 1), mapped to a standard normal by the inverse error
function. About 20 operators per draw: slower than torch.randn, a small part of a frame.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Bumped whenever a seed's noise values change (1: one torch.Generator per row); eval caches key on it.
STREAM_VERSION = 2
_MASK = 0xFFFFFFFF
_MULTIPLIERS = (0x7FEB352D, 0x5BD1E995, 0x2C1B3C6D)   # odd, < 2**31
_ROW_WEIGHTS = (0x2545F491, 0x4F6CDD1D, 0x6A09E667)   # odd, < 2**31: seed low / high word and counter into one key
_indices: dict[tuple[int, str], torch.Tensor] = {}    # (size, device) -> pre-mixed element indices


def _mix(x: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """A 32-bit avalanche hash of int64 tensors holding values in [0, 2**32)."""
    for multiplier in _MULTIPLIERS[:rounds]:
        x = x ^ (x >> 16)
        x = (x * multiplier) & _MASK
    return x ^ (x >> 15)


def _mixed_indices(size: int, device: torch.device) -> torch.Tensor:
    key = (size, str(device))
    if key not in _indices:
        _indices[key] = _mix(torch.arange(size, device=device, dtype=torch.int64))
    return _indices[key]


def hashed_normal(seeds: torch.Tensor, counters: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal float32 noise (R, *shape) from int64 seeds (R,) and counters (R,): a pure function of
    (seed, counter, element index). Few operators per call (a CPU frame draws five times)."""
    words = ((((seeds & _MASK) * _ROW_WEIGHTS[0]) & _MASK) + ((((seeds >> 32) & _MASK) * _ROW_WEIGHTS[1]) & _MASK)
             + (((counters & _MASK) * _ROW_WEIGHTS[2]) & _MASK))                            # (R,) < 3 * 2**32
    key = _mix((words & _MASK) ^ (words >> 32))                                             # (R,)
    bits = _mix(key[:, None] ^ _mixed_indices(math.prod(shape), seeds.device)[None, :], rounds=2)   # (R, S)
    return bits_to_normal(bits).view(len(seeds), *shape)


def bits_to_normal(bits: torch.Tensor) -> torch.Tensor:
    """32-bit hashes (int64 in [0, 2**32)) -> standard normals (float32), finite for every input: the top 23 bits
    k give u = (k + 0.5) / 2**22 - 1 in (-1, 1), exact in float32 (24 bits would round the largest k + 0.5 up to
    2**24, u to 1, and the inverse error function to inf), then sqrt(2) erfinv(u): |z| <= 5.3."""
    uniform = ((bits >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 22)) - 1.0           # (-1, 1)
    return math.sqrt(2.0) * torch.erfinv(uniform)


class RowNoise:
    """Seeds and draw counters of `batch` rows on `device`; `source(rows)` is a NoiseSource for those rows.

    A source called with shape (R, ...) returns (R, ...) noise in `dtype` for its R rows and advances their
    counters. rows None = every row (no index tensor: a call makes no host-to-device copy, so it can be
    captured in a CUDA graph)."""

    def __init__(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.seeds = torch.zeros(batch, dtype=torch.int64, device=device)
        self.counters = torch.zeros(batch, dtype=torch.int64, device=device)
        self.dtype = dtype

    def seed(self, rows: np.ndarray, seeds: list[int]) -> None:
        """Restart the given rows' streams from these seeds (any Python ints; taken modulo 2**63)."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.seeds.device)
        values = torch.as_tensor([int(s) % (1 << 63) for s in seeds], dtype=torch.int64)
        self.seeds[index] = values.to(self.seeds.device)
        self.counters[index] = 0

    def source(self, rows: np.ndarray | None = None):
        index = None if rows is None else torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.seeds.device)

        def sample(shape: tuple[int, ...]) -> torch.Tensor:
            if index is None:
                out = hashed_normal(self.seeds, self.counters, tuple(shape[1:]))
                self.counters.add_(1)
            else:
                out = hashed_normal(self.seeds[index], self.counters[index], tuple(shape[1:]))
                self.counters[index] += 1
            if out.shape[0] != shape[0]:
                raise ValueError(f"noise for {out.shape[0]} rows asked with shape {tuple(shape)}")
            return out.to(self.dtype)
        return sample
