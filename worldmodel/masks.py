"""Frame-level attention masks (True = may attend), expanded to tokens by the attention layer.

Dimensions: T frames in the forward; masks are (T_query, T_key) bool.
"""
from __future__ import annotations

import torch


def chunk_ids(frames: int, chunk: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Causal block index of each frame: frames 0..chunk-1 -> 0, and so on. (T,)"""
    return torch.arange(frames, device=device) // chunk


def block_causal_mask(frames: int, chunk: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Frame i sees frame j iff j's chunk is not after i's chunk (frames inside a chunk see each other). (T, T)"""
    ids = chunk_ids(frames, chunk, device)
    return ids[None, :] <= ids[:, None]


def teacher_forcing_mask(frames: int, chunk: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Mask over [clean_0..clean_{T-1}, noisy_0..noisy_{T-1}] (2T frames) for teacher forcing.

    Clean frames attend block-causally to clean frames (exactly what the KV cache holds at
    inference); noisy frame i attends to clean frames of earlier chunks and to the noisy frames of
    its own chunk, which is what a denoising pass over the cache sees. (2T, 2T)
    """
    ids = chunk_ids(frames, chunk, device)
    clean_to_clean = ids[None, :] <= ids[:, None]
    noisy_to_clean = ids[None, :] < ids[:, None]
    noisy_to_noisy = ids[None, :] == ids[:, None]
    no = torch.zeros(frames, frames, dtype=torch.bool, device=device)
    top = torch.cat([clean_to_clean, no], dim=1)
    bottom = torch.cat([noisy_to_clean, noisy_to_noisy], dim=1)
    return torch.cat([top, bottom], dim=0)
