"""Stage 1b: train the autoencoder's decoder alone on sprite pixels, the encoder (and so every latent) frozen.

The autoencoder stage's loss is an average over all pixels, of which sprites are a few percent; frames
where two sprites share a cell (an entity on the player or on another entity) decode
as a blend the game never draws, so even a perfect world model would
show them wrong. This stage trains the decoder alone, with `sprite_weight` on the pixels that differ
from the per-pixel median of the training frames (the static background), on the latent cache the
autoencoder stage wrote (`<autoencoder_dir>/latents`, checked against the frozen encoder at the start).
A HUD (`hud_rows`: a score bar) gets its own weight on its changing pixels, lit or not
(`hud_weight`: the sprite weight alone drew the score's digits 2, 5, 6, 8, 9 as one blend).
The encoder, the latent scale, the latent cache and the start bank are unchanged, so the DiT stages
need no retraining; they save the autoencoder they read into their checkpoints, and `train.bundle
autoencoder=...` swaps it into a finished world-model checkpoint.

Two modes:
- `decoder` unset: fine-tune the source checkpoint's own decoder (the sharpening of the small recipe);
- `decoder=cell` (or `conv`): a new decoder of that architecture (`AutoencoderConfig.decoder`), from scratch.
The result goes to `out_dir`, or, unset, rewrites `<autoencoder_dir>/checkpoint` in place.

    python -m train.stages.decoder autoencoder_dir=runs/coinchase/autoencoder loop.max_steps=800
    python -m train.stages.decoder decoder=cell run_dir=runs/cell_decoder/long/w64_b1 \
        out_dir=runs/cell_decoder/long/w64_b1/checkpoint lr=2e-3 lr_final=0.05 loop.max_steps=10000
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from train.common.cli import hydra_main
from train.common.latents import encode_frames, load_latents
from train.common.loop import LoopConfig, TrainState, autocast, cosine_factor, load_state, run_loop
from train.stages.autoencoder import (AutoencoderStageConfig, Data, evaluate, frame_sample, load_data,
                                     median_background, pixel_loss, sprite_loss_weight, sprite_pixels)
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig
from worldmodel.data import load_episodes

CACHE_CHECK_FRAMES = 16    # training frames re-encoded at the start to check the latent cache against the encoder
CACHE_TOLERANCE = 1e-3     # largest |cached - encoded| latent difference accepted (unit-scale latents)


@dataclass
class DecoderStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=800, eval_every=400, ckpt_every=200))
    autoencoder_dir: str = "runs/game/autoencoder"        # its checkpoint and latent cache are read
    out_dir: str | None = None        # the autoencoder checkpoint written at the end;
                                      #   None: <autoencoder_dir>/checkpoint
    decoder: str | None = None        # None: fine-tune the source's decoder; "cell" | "conv": a new one, from scratch
    cell_width: int | None = None     # a new decoder's AutoencoderConfig.cell_width (None: the source's)
    cell_blocks: int | None = None    # a new decoder's AutoencoderConfig.cell_blocks (None: the source's)
    dataset_id: str = "game/mixed-v0"
    data_root: str = "data/minari"
    run_dir: str = "runs/game/decoder"                    # this stage's resumable state
    batch_size: int = 64
    lr: float = 5e-4
    lr_final: float = 1.0             # cosine decay to this fraction of lr at loop.max_steps (1 = constant)
    sprite_weight: float = 10.0       # loss weight of pixels that differ from the background (1 elsewhere)
    l1_weight: float = 0.5            # loss = weighted (mse + l1_weight * l1), on [-1, 1] pixels
    latent_noise: float = 0.0         # training latents get Gaussian noise of std U(0, latent_noise) per frame
                                      #   (unit-scale latents): the decoder learns to draw a world model's
                                      #   imperfect latents as real ones
    hud_rows: int = 0                 # pixel rows at the top of the frame that show a HUD (a score bar; a game
                                      #   plug-in sets its own); 0: none
    hud_weight: float = 1.0           # loss weight of the HUD pixels that change across the training frames (the
                                      #   score's digits), lit or not, in place of sprite_weight: that weighs a
                                      #   pixel only where it is off the median frame, whose last digit is an 8,
                                      #   so where the latents leave digits in doubt the decoder draws the
                                      #   off-median value at 10:1 and 2, 5, 6, 8, 9 come out as one blend
    extra_datasets: list[str] = field(default_factory=list)   # more Minari datasets (under data_root) whose frames
                                      #   join the training frames, encoded here: e.g. long scripted play that
                                      #   shows scores the main recording never reaches (a digit never seen in a
                                      #   place is never drawn there)
    val_fraction: float = 0.1         # as the autoencoder stage split the episodes (same held-out frames)
    split_seed: int = 0
    eval_frames: int = 512

    def __post_init__(self) -> None:
        if self.sprite_weight < 1.0:
            raise ValueError(f"sprite_weight must be >= 1 (sprite pixels weigh at least as much as the rest), "
                             f"got {self.sprite_weight}")
        if self.latent_noise < 0:
            raise ValueError(f"latent_noise is a standard deviation, >= 0, got {self.latent_noise}")
        if self.hud_rows < 0 or self.hud_weight < 1.0:
            raise ValueError(f"hud_rows must be >= 0 and hud_weight >= 1, got {self.hud_rows} and {self.hud_weight}")
        if self.hud_rows == 0 and self.hud_weight != 1.0:
            raise ValueError("hud_weight acts on the HUD: set hud_rows as well")
        if not 0.0 <= self.lr_final <= 1.0:
            raise ValueError(f"lr_final is a fraction of lr in [0, 1], got {self.lr_final}")
        if self.decoder is None and (self.cell_width is not None or self.cell_blocks is not None):
            raise ValueError("cell_width and cell_blocks shape a new decoder: set decoder=cell as well")


def hud_pixels(frames: np.ndarray, background: torch.Tensor, hud_rows: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 training frames and their median `background` (1, 3, H, W) -> (1, 1, H, W) bool: the pixels
    of the top hud_rows rows whose colour is off the median in some frame (as `sprite_pixels` judges), i.e. the HUD's
    changing pixels."""
    mask = torch.zeros(1, 1, *frames.shape[1:3], dtype=torch.bool)
    if hud_rows > 0:
        hud = Autoencoder.to_float(torch.from_numpy(frames[:, :hud_rows]))
        mask[:, :, :hud_rows] = sprite_pixels(hud, background[:, :, :hud_rows]).any(0, keepdim=True)
    return mask


def loss_weight(images: torch.Tensor, background: torch.Tensor, hud: torch.Tensor,
                cfg: DecoderStageConfig) -> torch.Tensor:
    """(B, 3, H, W) target images -> (B, 1, H, W) per-pixel loss weight: sprite_weight off the background (1 on it),
    and hud_weight on the `hud` (1, 1, H, W) pixels whatever their colour."""
    weight = sprite_loss_weight(images, background, cfg.sprite_weight)
    return torch.where(hud, torch.full_like(weight, cfg.hud_weight), weight) if cfg.hud_weight != 1.0 else weight


def noise_latents(latents: torch.Tensor, cfg: DecoderStageConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, C, h, w) training latents plus Gaussian noise of std U(0, 1) x latent_noise, one U(0, 1) per frame."""
    if cfg.latent_noise == 0:
        return latents
    std = cfg.latent_noise * torch.rand(len(latents), 1, 1, 1, generator=generator)
    return latents + std * torch.randn(latents.shape, generator=generator)


def decoder_model(cfg: DecoderStageConfig, source: Autoencoder) -> Autoencoder:
    """The autoencoder to train: `source` itself, or its encoder and latent scale with a new decoder."""
    if cfg.decoder is None:
        return source
    sizes = {k: v for k, v in (("cell_width", cfg.cell_width), ("cell_blocks", cfg.cell_blocks)) if v is not None}
    config: AutoencoderConfig = dataclasses.replace(source.config, decoder=cfg.decoder, **sizes)
    torch.manual_seed(cfg.loop.seed)
    model = Autoencoder(config).to(next(source.parameters()).device)
    model.load_state_dict(source.encoder_state(), strict=False)
    return model


@torch.no_grad()
def cached_latents(cfg: DecoderStageConfig, data: Data, model: Autoencoder) -> np.ndarray:
    """The training frames' latents (M, C, h, w) from <autoencoder_dir>/latents, checked against the encoder."""
    cache = Path(cfg.autoencoder_dir) / "latents"
    # the cache's own dataset comes first; the autoencoder stage's cache_datasets (latent cache only) follow it
    latents = np.concatenate([e.frames for e in load_latents(cache).train])[:len(data.train_frames)]
    if len(latents) != len(data.train_frames):
        raise ValueError(f"{cache} holds {len(latents)} training latents but the split has {len(data.train_frames)} "
                         f"frames: val_fraction / split_seed / dataset_id must be the autoencoder stage's")
    index = np.linspace(0, len(latents) - 1, CACHE_CHECK_FRAMES).astype(int)
    encoded = model.eval().encode(torch.from_numpy(data.train_frames[index]).to(cfg.loop.device)).cpu()
    gap = float((encoded - torch.from_numpy(latents[index])).abs().max())
    if gap > CACHE_TOLERANCE:
        raise ValueError(f"{cache} does not match the encoder of {cfg.autoencoder_dir}/checkpoint (max latent "
                         f"difference {gap:.2g}): rerun the autoencoder stage's finalize or fix the paths")
    return latents


def add_extra_frames(cfg: DecoderStageConfig, data: Data, model: Autoencoder, latents: np.ndarray) -> np.ndarray:
    """Append the extra datasets' frames to data.train_frames; returns `latents` with theirs appended."""
    for dataset_id in cfg.extra_datasets:
        episodes, _ = load_episodes(dataset_id, cfg.data_root)
        frames = np.concatenate([e.frames for e in episodes])
        data.train_frames = np.concatenate([data.train_frames, frames])
        latents = np.concatenate([latents, encode_frames(model.eval(), frames)])
    return latents


def build(cfg: DecoderStageConfig, data: Data, model: Autoencoder) -> TrainState:
    model.encoder.requires_grad_(False)
    latents = add_extra_frames(cfg, data, model, cached_latents(cfg, data, model))
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    sample = frame_sample(data.train_frames)
    background = median_background(sample)
    return TrainState(modules={"autoencoder": model}, optimizers={"decoder": optimizer},
                      generator=torch.Generator().manual_seed(cfg.loop.seed),
                      scratch={"background": background.to(cfg.loop.device), "latents": latents,
                               "hud": hud_pixels(sample, background, cfg.hud_rows).to(cfg.loop.device)})


def set_lr(state: TrainState, cfg: DecoderStageConfig) -> float:
    """Constant, or cosine from lr down to lr_final x lr at loop.max_steps."""
    lr = cfg.lr * cosine_factor(state.step / max(cfg.loop.max_steps, 1), cfg.lr_final)
    for group in state.optimizers["decoder"].param_groups:
        group["lr"] = lr
    return lr


def train_step(state: TrainState, data: Data, cfg: DecoderStageConfig) -> dict[str, float]:
    model, optimizer = state.modules["autoencoder"], state.optimizers["decoder"]
    model.decoder.train()
    lr = set_lr(state, cfg)
    index = torch.randint(len(data.train_frames), (cfg.batch_size,), generator=state.generator).numpy()
    images = Autoencoder.to_float(torch.from_numpy(data.train_frames[index]).to(cfg.loop.device))   # (B, 3, H, W)
    latents = torch.from_numpy(state.scratch["latents"][index])                                     # (B, C, h, w)
    latents = noise_latents(latents, cfg, state.generator).to(cfg.loop.device)
    with autocast(cfg.loop):
        recon = model.decode_float(latents).float()                                                 # (B, 3, H, W)
    loss = pixel_loss(recon, images, cfg.l1_weight,
                      loss_weight(images, state.scratch["background"], state.scratch["hud"], cfg))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), 1.0)
    optimizer.step()
    return {"loss": float(loss.detach()), "lr": lr}


def main(cfg: DecoderStageConfig) -> dict[str, float]:
    stage = AutoencoderStageConfig(dataset_id=cfg.dataset_id, data_root=cfg.data_root, val_fraction=cfg.val_fraction,
                                   split_seed=cfg.split_seed, eval_frames=cfg.eval_frames, loop=cfg.loop)
    source = checkpoint.load(Path(cfg.autoencoder_dir) / "checkpoint", cfg.loop.device)
    model = decoder_model(cfg, source.autoencoder)
    stage.model = model.config
    data = load_data(stage)
    state = build(cfg, data, model)
    load_state(Path(cfg.run_dir), state)
    metrics = run_loop("decoder", cfg.loop, Path(cfg.run_dir), state, lambda s: train_step(s, data, cfg),
                       lambda s: evaluate(s, data, stage))
    out = Path(cfg.out_dir) if cfg.out_dir is not None else Path(cfg.autoencoder_dir) / "checkpoint"
    config = dataclasses.replace(source.config, autoencoder=model.config)
    checkpoint.save(out, config, model, start_frames=source.start_frames, start_actions=source.start_actions)
    return metrics


if __name__ == "__main__":
    hydra_main("decoder", DecoderStageConfig, main)
