"""Learned codes: where a game's randomness lands, inferred from frames and actions alone (no frame reader).

A code slot names one latent cell, as a reader's entity label does, but nothing labels it: while the teacher
trains, a small posterior network reads each frame beside the frame before it and picks, per slot, a cell whose
one-hot map the teacher is given as its event channel (straight-through Gumbel-softmax: hard maps forward, soft
gradients back). The flow loss then teaches the posterior to point at what the past and the keys do not fix (a
ball that respawns, food that appears), since that is what the map helps the teacher draw. After training, the
posterior's most likely cells label every frame of the latent cache in a frame reader's format (`events.safetensors`),
the events stage learns the prior over them from the previous frame and the key, and every later DiT stage takes
them as it takes a reader's: at play time the event model samples the codes and the DiT draws the frame given them
(docs/model.md "Learned codes").

Dimensions: B batch, T frames, C latent channels, h = w latent size, E code slots, K = h * w cells.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from train.common.events import EVENTS_FILE
from worldmodel.data import Episode
from worldmodel.masks import previous_frames


class CodePosterior(nn.Module):
    """(previous, frame) latents -> per-slot logits over the frame's latent cells."""

    def __init__(self, channels: int, slots: int, width: int = 64):
        super().__init__()
        self.slots = slots
        self.net = nn.Sequential(nn.Conv2d(2 * channels, width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, slots, 1))

    def forward(self, previous: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """previous, latents (B, T, C, h, w) -> logits (B, T, E, K)."""
        b, t = latents.shape[:2]
        logits = self.net(torch.cat([previous, latents], dim=2).flatten(0, 1).float())     # (B*T, E, h, w)
        return logits.flatten(2).unflatten(0, (b, t))


def straight_through(logits: torch.Tensor, generator: torch.Generator, size: int, tau: float = 1.0) -> torch.Tensor:
    """One Gumbel-softmax draw per slot: one-hot maps (B, T, E, h, w), hard forward, the soft sample's gradient."""
    uniform = torch.rand(logits.shape, generator=generator).clamp(1e-9, 1 - 1e-9).to(logits.device)
    soft = F.softmax((logits - torch.log(-torch.log(uniform))) / tau, dim=-1)                  # (B, T, E, K)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return (hard + soft - soft.detach()).unflatten(-1, (size, size))


def clip_maps(posterior: CodePosterior, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The teacher's event maps of a clip (B, T, C, h, w): each frame's codes given the frame before it in the clip."""
    return straight_through(posterior(previous_frames(latents), latents), generator, latents.shape[-1])


@torch.no_grad()
def episode_codes(posterior: CodePosterior, episode: Episode, device: str, batch: int = 1024) -> np.ndarray:
    """(n+1, E) int64: the most likely cell of each slot in each frame of a latent episode (frame 0 after zeros)."""
    frames = torch.from_numpy(episode.frames)
    previous = torch.cat([torch.zeros_like(frames[:1]), frames[:-1]])
    parts = [posterior(previous[i:i + batch, None].to(device), frames[i:i + batch, None].to(device))[:, 0].argmax(-1)
             for i in range(0, len(frames), batch)]
    return torch.cat(parts).cpu().numpy().astype(np.int64)


def write_codes(directory: Path, posterior: CodePosterior, train: list[Episode], val: list[Episode],
                device: str) -> Path:
    """Label every frame of the latent cache with its codes: directory/events.safetensors, as a reader's labels."""
    posterior = posterior.eval()
    cells = {split: np.concatenate([episode_codes(posterior, e, device) for e in episodes])
             if episodes else np.zeros((0, posterior.slots), np.int64) for split, episodes in (("train", train),
                                                                                               ("val", val))}
    tmp = directory / (EVENTS_FILE + ".tmp")
    save_file({f"{split}/cells": torch.from_numpy(c) for split, c in cells.items()}, str(tmp))
    tmp.replace(directory / EVENTS_FILE)
    return directory / EVENTS_FILE
