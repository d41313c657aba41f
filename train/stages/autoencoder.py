"""Stage 1: the frame autoencoder, then the latent cache every later stage reads.

Reads a Minari dataset (train.stages.record); trains `worldmodel.autoencoder.Autoencoder` with an
L2 + L1 pixel loss on random frames, `sprite_weight` on the pixels off the static background (sprites are a
few percent of a frame: an unweighted mean lets the encoder drop a small moving object, and then no world
model can draw it); reports PSNR on held-out episodes. At the end it fixes the
latent scale (unit variance over training frames), writes an autoencoder-only world-model
checkpoint to <run_dir>/checkpoint and the encoded dataset to <run_dir>/latents. `cache_datasets`
adds more recordings to the latent cache only (the DiT stages train on them; the autoencoder, its
latent scale and the start bank do not); a finished stage whose cache holds other datasets
re-encodes the cache alone and keeps its checkpoint (a later decoder stage may have rewritten it).

    python -m train.stages.autoencoder dataset_id=coinchase/random-v0 loop.max_steps=3000
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train.common.cli import hydra_main
from train.common.events import EVENTS_FILE, save_events
from train.common.latents import LATENTS_FILE, save_latents, start_bank
from train.common.loop import LoopConfig, TrainState, autocast, load_state, run_loop
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, WorldModelConfig
from worldmodel.data import dataset_env_id, load_episodes, split_by_episode
from worldmodel.metrics import psnr

CACHE_DATASETS_FILE = "datasets.json"       # beside the latent cache: the dataset ids it holds, in order


@dataclass
class AutoencoderStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=3000, eval_every=500, ckpt_every=250))
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dataset_id: str = "game/random-v0"        # Minari dataset written by train.stages.record
    data_root: str = "data/minari"            # Minari datasets root
    run_dir: str = "runs/game/autoencoder"
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100                   # linear lr warmup, then linear decay to lr / 10
    l1_weight: float = 0.5                    # loss = mse + l1_weight * l1, on [-1, 1] pixels
    sprite_weight: float = 1.0                # loss weight of pixels whose colour is off the per-pixel median of the
                                              #   training frames (the static background); 1 elsewhere
    val_fraction: float = 0.1                 # episodes held out (PSNR, later stages' eval)
    split_seed: int = 0
    eval_frames: int = 512                    # held-out frames scored at each evaluation
    start_context: int = 4                    # frames per real start context in the bank
    start_bank_size: int = 64                 # contexts in the bank the checkpoints carry
    events: str = ""                          # frame reader (train.common.plugins.load_reader: a module, or a game
                                              #   whose plug-in names one) whose per-frame cells of the random
                                              #   entities go beside the latent cache; "" = none (the DiT stages then
                                              #   train without entity events)
    cache_datasets: list[str] = field(default_factory=list)   # more Minari datasets (under data_root) encoded into
                                              #   the latent cache beside dataset_id, split by episode the same way:
                                              #   e.g. play that goes on after a termination (the main
                                              #   recording ends there, so the DiT never sees that frame as
                                              #   context). An events stage reading this cache trains its
                                              #   outcome heads on every cached step: cache there only recordings
                                              #   whose rewards and terminations are the game's (play that goes on
                                              #   after a termination has none there)


    def __post_init__(self) -> None:
        if self.sprite_weight < 1.0:
            raise ValueError(f"sprite_weight must be >= 1 (sprite pixels weigh at least as much as the rest), "
                             f"got {self.sprite_weight}")


@dataclass
class Data:
    train_frames: np.ndarray    # (M, H, W, 3) uint8, all training frames
    val_frames: np.ndarray      # (V, H, W, 3) uint8
    split: tuple[list, list]    # train / val episodes of dataset_id
    n_actions: int
    cache: tuple[list, list] = ((), ())   # train / val episodes of cache_datasets (the latent cache only)


def load_data(cfg: AutoencoderStageConfig) -> Data:
    episodes, n_actions = load_episodes(cfg.dataset_id, cfg.data_root)
    train, val = split_by_episode(episodes, cfg.val_fraction, cfg.split_seed)
    frame_size = episodes[0].frames.shape[1]
    if frame_size != cfg.model.frame_size:
        raise ValueError(f"dataset frames are {frame_size}px but model.frame_size is {cfg.model.frame_size}")
    cache_train, cache_val = [], []
    for dataset_id in cfg.cache_datasets:
        extra, extra_actions = load_episodes(dataset_id, cfg.data_root)
        if extra_actions != n_actions or extra[0].frames.shape[1:] != episodes[0].frames.shape[1:]:
            raise ValueError(f"cache dataset {dataset_id!r} has {extra_actions} actions and "
                             f"{extra[0].frames.shape[1:]} frames; "
                             f"{cfg.dataset_id!r} has {n_actions} and {episodes[0].frames.shape[1:]}")
        extra_train, extra_val = split_by_episode(extra, cfg.val_fraction, cfg.split_seed)
        cache_train += extra_train
        cache_val += extra_val
    return Data(np.concatenate([e.frames for e in train]), np.concatenate([e.frames for e in val or train]),
                (train, val), n_actions, (cache_train, cache_val))


def frame_sample(frames: np.ndarray, size: int = 4096) -> np.ndarray:
    """At most `size` of (N, H, W, 3) frames, evenly spaced (first and last included)."""
    return frames[np.linspace(0, len(frames) - 1, min(size, len(frames))).astype(int)]


def median_background(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames -> (1, 3, H, W) float: the per-pixel median of (a sample of) them."""
    return Autoencoder.to_float(torch.from_numpy(np.median(frame_sample(frames), axis=0).astype(np.uint8))[None])


def sprite_pixels(images: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float images -> (B, 1, H, W) bool: pixels whose colour is not the background's."""
    return (images - background).abs().amax(dim=1, keepdim=True) > 0.1


def sprite_loss_weight(images: torch.Tensor, background: torch.Tensor, sprite_weight: float) -> torch.Tensor:
    """(B, 3, H, W) target images -> (B, 1, H, W): sprite_weight off the background, 1 on it."""
    return 1.0 + (sprite_weight - 1.0) * sprite_pixels(images, background).float()


def build(cfg: AutoencoderStageConfig, data: Data) -> TrainState:
    torch.manual_seed(cfg.loop.seed)
    model = Autoencoder(cfg.model).to(cfg.loop.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.loop.seed)
    return TrainState(modules={"autoencoder": model}, optimizers={"autoencoder": optimizer}, generator=generator,
                      scratch={"background": median_background(data.train_frames).to(cfg.loop.device)})


def pixel_loss(recon: torch.Tensor, images: torch.Tensor, l1_weight: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """mse + l1_weight * l1 of (B, 3, H, W) reconstructions; with `weight` (B, 1, H, W) a per-pixel weighted mean."""
    if weight is None:
        return F.mse_loss(recon, images) + l1_weight * F.l1_loss(recon, images)
    error = (recon - images) ** 2 + l1_weight * (recon - images).abs()
    return (error * weight).mean() / weight.mean()


def train_step(state: TrainState, data: Data, cfg: AutoencoderStageConfig) -> dict[str, float]:
    model, optimizer = state.modules["autoencoder"], state.optimizers["autoencoder"]
    model.train()
    optimizer.zero_grad(set_to_none=True)
    lr = (cfg.lr * min(1.0, (state.step + 1) / max(cfg.warmup_steps, 1))
          * (0.1 + 0.9 * (1 - state.step / cfg.loop.max_steps)))
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for _ in range(cfg.loop.grad_accum):
        index = torch.randint(len(data.train_frames), (cfg.batch_size,), generator=state.generator)
        images = Autoencoder.to_float(torch.from_numpy(data.train_frames[index.numpy()]).to(cfg.loop.device))
        with autocast(cfg.loop):
            recon = model.decode_float(model.encode_float(images)).float()
        weight = (None if cfg.sprite_weight == 1.0
                  else sprite_loss_weight(images, state.scratch["background"], cfg.sprite_weight))
        loss = pixel_loss(recon, images, cfg.l1_weight, weight)
        (loss / cfg.loop.grad_accum).backward()
        total += loss.item() / cfg.loop.grad_accum
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return {"loss": total, "lr": lr}


@torch.no_grad()
def evaluate(state: TrainState, data: Data, cfg: AutoencoderStageConfig) -> dict[str, float]:
    model = state.modules["autoencoder"].eval()
    frames = frame_sample(data.val_frames, cfg.eval_frames)
    recon = torch.cat([model.decode(model.encode(torch.from_numpy(frames[i:i + 256]).to(cfg.loop.device))).cpu()
                       for i in range(0, len(frames), 256)])
    return {"psnr": float(np.mean(np.minimum(psnr(recon.numpy(), frames), 100.0)))}


@torch.no_grad()
def set_latent_scale(model: Autoencoder, frames: np.ndarray, device: str) -> float:
    """Make encoded latents unit-variance over (a sample of) the training frames."""
    model.eval().latent_scale.fill_(1.0)
    sample = frame_sample(frames, 2048)
    latents = torch.cat([model.encode(torch.from_numpy(sample[i:i + 256]).to(device))
                         for i in range(0, len(sample), 256)])
    scale = float(latents.std())
    model.latent_scale.fill_(scale)
    return scale


def finalize(state: TrainState, data: Data, cfg: AutoencoderStageConfig) -> Path:
    """Latent scale, AE-only checkpoint, latent cache."""
    run_dir = Path(cfg.run_dir)
    model = state.modules["autoencoder"]
    scale = set_latent_scale(model, data.train_frames, cfg.loop.device)
    config = WorldModelConfig(autoencoder=cfg.model, latent_scale=scale, stage="autoencoder",
                              env_id=dataset_env_id(cfg.dataset_id, cfg.data_root))
    config.dit.n_actions = data.n_actions
    config.dit.latent_channels, config.dit.latent_size = cfg.model.latent_channels, cfg.model.latent_size
    bank_frames, bank_actions = start_bank(data.split[1] or data.split[0], data.n_actions, cfg.start_context,
                                           cfg.start_bank_size, cfg.split_seed)
    checkpoint.save(run_dir / "checkpoint", config, model, start_frames=bank_frames, start_actions=bank_actions)
    write_cache(run_dir / "latents", model, data, cfg, (bank_frames, bank_actions))
    return run_dir / "checkpoint"


def cache_episodes(data: Data) -> tuple[list, list]:
    """The latent cache's train / val episodes: dataset_id's, then cache_datasets'."""
    return data.split[0] + list(data.cache[0]), data.split[1] + list(data.cache[1])


def write_cache(directory: Path, model: Autoencoder, data: Data, cfg: AutoencoderStageConfig,
                starts: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Encode the cache's episodes with the start bank `starts` (the checkpoint's: frames, actions) and record which
    datasets it holds."""
    train, val = cache_episodes(data)
    save_latents(directory, model.eval(), train, val, data.n_actions, *starts,
                 notes={CACHE_DATASETS_FILE: json.dumps(cached_ids(cfg))})


def cached_ids(cfg: AutoencoderStageConfig) -> list[str]:
    return [cfg.dataset_id, *cfg.cache_datasets]


def cache_is_current(directory: Path, cfg: AutoencoderStageConfig) -> bool:
    """The latent cache exists and holds exactly the configured datasets (a cache from before cache_datasets
    existed holds dataset_id alone)."""
    if not (directory / LATENTS_FILE).exists():
        return False
    listed = directory / CACHE_DATASETS_FILE
    return (json.loads(listed.read_text()) if listed.exists() else [cfg.dataset_id]) == cached_ids(cfg)


def main(cfg: AutoencoderStageConfig) -> dict[str, float]:
    run_dir = Path(cfg.run_dir)
    data = load_data(cfg)
    state = build(cfg, data)
    load_state(run_dir, state)
    trained = state.step >= cfg.loop.max_steps and (run_dir / "latents" / LATENTS_FILE).exists()
    finished = trained and cache_is_current(run_dir / "latents", cfg)
    metrics = {} if trained else run_loop("autoencoder", cfg.loop, run_dir, state,
                                          lambda s: train_step(s, data, cfg), lambda s: evaluate(s, data, cfg))
    if not trained:
        finalize(state, data, cfg)
    elif not finished:     # other cache datasets: re-encode with the checkpoint's encoder (its latent scale), keep it
        print(f"[autoencoder] re-encoding the latent cache for {cached_ids(cfg)}", flush=True)
        kept = checkpoint.load(run_dir / "checkpoint", cfg.loop.device)
        write_cache(run_dir / "latents", kept.autoencoder, data, cfg, (kept.start_frames, kept.start_actions))
    if cfg.events and (not finished or not (run_dir / "latents" / EVENTS_FILE).exists()):
        save_events(run_dir / "latents", *cache_episodes(data), cfg.events)   # also labels an older cache
    return metrics


if __name__ == "__main__":
    hydra_main("autoencoder", AutoencoderStageConfig, main)
