"""Frame-level attention masks (True = may attend), expanded to tokens by the attention layer.

Also the previous-frame layouts that go with them (which frame each frame sees as the one before it).

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


def previous_frames(latents: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """The frame before each frame of a sequence: (B, T, ...) -> (B, T, ...); before frame 0 `first` (B, ...)
    or zeros."""
    first = torch.zeros_like(latents[:, 0]) if first is None else first
    return torch.cat([first[:, None].to(latents.dtype), latents[:, :-1]], dim=1)


def teacher_forcing_previous(clean: torch.Tensor, noisy: torch.Tensor, chunk: int) -> torch.Tensor:
    """Previous frames for the [clean | noisy] teacher-forcing sequence (B, 2T, ...), as the rollout sees them.

    Clean frame i gets clean frame i-1 (the cache-writing pass). Noisy frame i gets clean frame i-1
    when it opens a chunk (the cache's last frame), else noisy frame i-1 (denoised with it in one chunk)."""
    t = clean.shape[1]
    shifted_clean, shifted_noisy = previous_frames(clean), previous_frames(noisy)
    opens_chunk = (torch.arange(t, device=clean.device) % chunk == 0).view(1, t, *([1] * (clean.dim() - 2)))
    return torch.cat([shifted_clean, torch.where(opens_chunk, shifted_clean, shifted_noisy)], dim=1)
