"""Stage 1c, for a game without a frame reader: the learned codes, where the game's randomness lands.

A small conv net (the surprise model) learns to predict each latent frame from the two before it and the key,
by mean squared error. Whatever the past and the keys fix it learns to predict; what they do not (a ball that
respawns at a random column, food that appears) it cannot, so its error is large exactly there. Per frame, the
cell where the error is largest is the first code slot, the largest outside that cell's neighbours the second,
and so on; a slot is "nowhere" (cell index K = h * w) unless its error is a surprise: above the threshold that
Otsu's method puts between quiet and surprising frames on the log of each frame's largest error. When the two
groups are less than `min_separation` apart (a game the past fixes), every code is "nowhere".

The codes label every frame of the latent cache in a reader's format (`events.safetensors`): the events stage then
learns their prior from the previous frame and the key, and every DiT stage is given them as a reader's cells, so
at play the event model samples where the random thing lands and the DiT draws the frame given it
(docs/model.md "Learned codes").

    python -m train.stages.codes autoencoder_dir=runs/mygame/autoencoder run_dir=runs/mygame/codes

Dimensions: N transitions, C latent channels, h = w latent size, K = h * w cells, E code slots.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from train.common.cli import hydra_main
from train.common.events import EVENTS_FILE, write_events
from train.common.latents import load_latents
from train.common.loop import LoopConfig, TrainState, already_trained, load_state, run_loop, warmup_cosine_lr
from worldmodel.checkpoint import write_dir_atomically
from worldmodel.data import Episode
from worldmodel.events import one_hot
from worldmodel.files import load_weights

SURPRISE_MODEL_FILE = "surprise_model.safetensors"
CODES_INFO_FILE = "codes.json"


@dataclass
class CodesStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=1500, eval_every=500, ckpt_every=250))
    autoencoder_dir: str = "runs/game/autoencoder"        # its latents/ get the codes (events.safetensors)
    run_dir: str = "runs/game/codes"
    slots: int = 2                    # E: code slots per frame
    width: int = 96                   # surprise model channels
    batch_size: int = 256             # transitions per step
    lr: float = 1e-3                  # AdamW, cosine to lr_final x lr
    lr_final: float = 0.05
    neighbours: int = 1               # a later slot lies further than this (cells, Chebyshev) from every earlier one
    min_separation: float = 1.0       # log10: surprising frames' largest errors must be this far above the quiet
                                      #   ones' (mean of each Otsu group), else the game has no codes

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")


class SurpriseModel(nn.Module):
    """(frame before last, last frame) latents (N, C, h, w) each, action (N,) -> the next latent (N, C, h, w)."""

    def __init__(self, channels: int, n_actions: int, width: int = 96):
        super().__init__()
        self.n_actions = n_actions
        self.net = nn.Sequential(nn.Conv2d(2 * channels + n_actions + 1, width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GELU(),
                                 nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, before: torch.Tensor, last: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        keys = one_hot(actions, self.n_actions + 1, last.dtype)[..., None, None].expand(-1, -1, *last.shape[-2:])
        return last + self.net(torch.cat([last, before, keys], dim=1))


@dataclass
class Transitions:
    """Every step of a set of latent episodes as indices into their frames laid end to end."""
    frames: torch.Tensor     # (F, C, h, w) float32
    target: torch.Tensor     # (N,) int64 the frame to predict (each episode's frames after its first)
    last: torch.Tensor       # (N,) the frame before it
    before: torch.Tensor     # (N,) the one before that (the last frame again at an episode's second frame)
    actions: torch.Tensor    # (N,) the key between last and target


def transitions(episodes: list[Episode]) -> Transitions:
    frames, target, last, before, actions, offset = [], [], [], [], [], 0
    for episode in episodes:
        n = len(episode)
        t = np.arange(offset + 1, offset + n)
        target.append(t), last.append(t - 1), before.append(np.maximum(t - 2, offset)), actions.append(episode.actions)
        frames.append(episode.frames)
        offset += n
    as_long = [torch.from_numpy(np.concatenate(x).astype(np.int64)) for x in (target, last, before, actions)]
    return Transitions(torch.from_numpy(np.concatenate(frames)).float(), *as_long)


def predict(model: SurpriseModel, data: Transitions, index: torch.Tensor, device: str) -> torch.Tensor:
    return model(data.frames[data.before[index]].to(device), data.frames[data.last[index]].to(device),
                 data.actions[index].to(device))


def train_step(state: TrainState, data: Transitions, cfg: CodesStageConfig) -> dict[str, float]:
    model, optimizer = state.modules["surprise"], state.optimizers["surprise"]
    lr = warmup_cosine_lr(optimizer, state.step, cfg.loop.max_steps, cfg.lr, cfg.lr_final)
    index = torch.randint(len(data.target), (cfg.batch_size,), generator=state.generator)
    loss = F.mse_loss(predict(model, data, index, cfg.loop.device), data.frames[data.target[index]].to(cfg.loop.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "lr": lr}


@torch.no_grad()
def cell_errors(model: SurpriseModel, data: Transitions, device: str, batch: int = 2048) -> torch.Tensor:
    """(N, K) the surprise model's squared error per latent cell (summed over channels) of every transition."""
    model = model.eval()
    parts = []
    for start in range(0, len(data.target), batch):
        index = torch.arange(start, min(start + batch, len(data.target)))
        error = predict(model, data, index, device).cpu() - data.frames[data.target[index]]
        parts.append(error.pow(2).sum(1).flatten(1))
    model.train()
    return torch.cat(parts)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """The split of `values` that maximises the between-group variance (Otsu), and the gap between the two groups'
    means."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mass = np.cumsum(counts * centres)
    below_mean = mass / np.maximum(weight, 1)
    above_mean = (mass[-1] - mass) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (below_mean - above_mean) ** 2
    best = int(np.argmax(between[:-1]))
    return float(edges[best + 1]), float(above_mean[best] - below_mean[best])


def surprise_threshold(errors: torch.Tensor, min_separation: float) -> float:
    """The error above which a cell's error is a surprise; infinite where the frames are not in two groups."""
    largest = np.log10(errors.amax(1).numpy().astype(np.float64) + 1e-12)
    if len(largest) < 2 or np.ptp(largest) == 0:
        return float("inf")
    split, gap = otsu_threshold(largest)
    return float(10 ** split) if gap >= min_separation else float("inf")


def pick_codes(errors: torch.Tensor, slots: int, threshold: float, latent_size: int, neighbours: int) -> torch.Tensor:
    """(N, E) int64: per row of errors (N, K), the most surprising cells, each away from the earlier ones by more
    than `neighbours`; K (nowhere) where the error left is not above `threshold`."""
    k = latent_size * latent_size
    rows, cols = torch.arange(k) // latent_size, torch.arange(k) % latent_size
    left = errors.clone()
    codes = []
    for _ in range(slots):
        value, cell = left.max(1)
        codes.append(torch.where(value > threshold, cell, torch.full_like(cell, k)))
        near = (((rows[None] - rows[cell][:, None]).abs() <= neighbours)
                & ((cols[None] - cols[cell][:, None]).abs() <= neighbours))                     # (N, K)
        left = left.masked_fill(near, float("-inf"))
    return torch.stack(codes, dim=1)


def episode_codes(codes: torch.Tensor, episodes: list[Episode], k: int) -> np.ndarray:
    """The transitions' codes (N, E) laid out per frame (F, E): each episode's first frame is nowhere."""
    out, at = [], 0
    for episode in episodes:
        steps = len(episode) - 1
        out.append(np.full((1, codes.shape[1]), k, np.int64))
        out.append(codes[at:at + steps].numpy())
        at += steps
    return np.concatenate(out)


def label_cache(cfg: CodesStageConfig, model: SurpriseModel, splits: dict[str, tuple[list[Episode], Transitions]],
                latent_size: int) -> dict[str, float]:
    """Write the codes of every cached frame (each non-empty split's episodes and their transitions; a missing val
    split gets no rows) to the cache's events.safetensors; returns the labelling's figures."""
    k = latent_size * latent_size
    errors = {split: cell_errors(model, steps, cfg.loop.device) for split, (_, steps) in splits.items()}
    threshold = surprise_threshold(errors["train"], cfg.min_separation)
    cells = {split: episode_codes(pick_codes(errors[split], cfg.slots, threshold, latent_size, cfg.neighbours),
                                  episodes, k)
             for split, (episodes, _) in splits.items()}
    cells.setdefault("val", np.zeros((0, cfg.slots), np.int64))
    write_events(Path(cfg.autoencoder_dir) / "latents",
                 {f"{split}/cells": torch.from_numpy(c) for split, c in cells.items()})
    coded = (cells["train"] < k).mean(0)
    return {"threshold": threshold, **{f"coded_frames_slot{i}": float(c) for i, c in enumerate(coded)}}


def main(cfg: CodesStageConfig) -> dict[str, float]:
    run_dir, out = Path(cfg.run_dir), Path(cfg.run_dir) / "checkpoint"
    labelled = Path(cfg.autoencoder_dir) / "latents" / EVENTS_FILE
    if already_trained(run_dir, cfg.loop, out) and labelled.exists() and (run_dir / CODES_INFO_FILE).exists():
        print(f"[codes] {cfg.run_dir} is trained and {labelled} holds its codes: kept")   # a rerun of the pipeline
        return json.loads((run_dir / CODES_INFO_FILE).read_text())
    latents = load_latents(Path(cfg.autoencoder_dir) / "latents")
    channels, latent_size = latents.train[0].frames.shape[1], latents.train[0].frames.shape[-1]
    splits = {split: (episodes, transitions(episodes))
              for split, episodes in (("train", latents.train), ("val", latents.val)) if episodes}
    train, val = splits["train"][1], splits.get("val", splits["train"])[1]
    torch.manual_seed(cfg.loop.seed)
    model = SurpriseModel(channels, latents.n_actions, cfg.width).to(cfg.loop.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    state = TrainState(modules={"surprise": model}, optimizers={"surprise": optimizer},
                       generator=torch.Generator().manual_seed(cfg.loop.seed))
    load_state(run_dir, state)

    def evaluate(s: TrainState) -> dict[str, float]:
        return {"val_mse": float(cell_errors(s.modules["surprise"], val, cfg.loop.device).sum(1).mean()
                                 / (channels * latent_size ** 2))}

    metrics = run_loop("codes", cfg.loop, run_dir, state, lambda s: train_step(s, train, cfg), evaluate,
                       lambda s: write_dir_atomically(out, lambda tmp: save_file(
                           {k: v.detach().contiguous() for k, v in s.modules["surprise"].state_dict().items()},
                           str(tmp / SURPRISE_MODEL_FILE))))
    load_weights(model, out / SURPRISE_MODEL_FILE)
    figures = label_cache(cfg, model, splits, latent_size)
    (run_dir / CODES_INFO_FILE).write_text(json.dumps(figures, indent=2))
    print(f"[codes] {figures} -> {Path(cfg.autoencoder_dir) / 'latents' / EVENTS_FILE}")
    return {**metrics, **figures}


if __name__ == "__main__":
    hydra_main("codes", CodesStageConfig, main)
