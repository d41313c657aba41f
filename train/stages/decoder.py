"""Stage 1b: sharpen the autoencoder's decoder on sprite pixels, the encoder (and so every latent) frozen.

The autoencoder stage's loss is an average over all pixels, of which sprites are a few percent; frames
where two sprites share a cell (the enemy on the player or the coin: ~3.5 % of the recorded frames,
every "caught" frame) decode as a blend the game never draws, so even a perfect world model would
show them wrong. This stage trains the decoder alone, with `sprite_weight` on the pixels that differ
from the per-pixel median of the training frames (the static background), then writes the
autoencoder checkpoint in place (`<autoencoder_dir>/checkpoint`): the encoder, the latent scale, the
latent cache and the start bank are unchanged, so the DiT stages need no retraining and save the
sharper decoder into their checkpoints (they read the autoencoder from there when they save).

    python -m train.stages.decoder autoencoder_dir=runs/coinchase/autoencoder loop.max_steps=800
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from train.common.cli import hydra_main
from train.common.loop import LoopConfig, TrainState, autocast, load_state, run_loop
from train.stages.autoencoder import AutoencoderStageConfig, Data, evaluate, load_data, pixel_loss
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder


@dataclass
class DecoderStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=800, eval_every=400, ckpt_every=200))
    autoencoder_dir: str = "runs/coinchase/autoencoder"   # its checkpoint is read, and rewritten at the end
    dataset_id: str = "coinchase/mixed-v0"
    data_root: str = "data/minari"
    run_dir: str = "runs/coinchase/decoder"               # this stage's resumable state
    batch_size: int = 64
    lr: float = 5e-4
    sprite_weight: float = 10.0       # loss weight of pixels that differ from the background (1 elsewhere)
    l1_weight: float = 0.5            # loss = weighted (mse + l1_weight * l1), on [-1, 1] pixels
    val_fraction: float = 0.1         # as the autoencoder stage split the episodes (same held-out frames)
    split_seed: int = 0
    eval_frames: int = 512


def sprite_pixels(images: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float images -> (B, 1, H, W) bool: pixels whose colour is not the background's."""
    return (images - background).abs().amax(dim=1, keepdim=True) > 0.1


def build(cfg: DecoderStageConfig, data: Data, model: Autoencoder) -> TrainState:
    if cfg.sprite_weight < 1.0:
        raise ValueError(f"sprite_weight must be >= 1 (sprite pixels weigh at least as much as the rest), got {cfg.sprite_weight}")
    model.encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    sample = data.train_frames[np.linspace(0, len(data.train_frames) - 1, min(4096, len(data.train_frames))).astype(int)]
    background = Autoencoder.to_float(torch.from_numpy(np.median(sample, axis=0).astype(np.uint8))[None])
    return TrainState(modules={"autoencoder": model}, optimizers={"decoder": optimizer},
                      generator=torch.Generator().manual_seed(cfg.loop.seed),
                      scratch={"background": background.to(cfg.loop.device)})


def train_step(state: TrainState, data: Data, cfg: DecoderStageConfig) -> dict[str, float]:
    model, optimizer = state.modules["autoencoder"], state.optimizers["decoder"]
    model.decoder.train()
    index = torch.randint(len(data.train_frames), (cfg.batch_size,), generator=state.generator)
    images = Autoencoder.to_float(torch.from_numpy(data.train_frames[index.numpy()]).to(cfg.loop.device))   # (B, 3, H, W)
    with torch.no_grad(), autocast(cfg.loop):
        latents = model.encode_float(images)
    with autocast(cfg.loop):
        recon = model.decode_float(latents).float()
    weight = 1.0 + (cfg.sprite_weight - 1.0) * sprite_pixels(images, state.scratch["background"]).float()
    loss = pixel_loss(recon, images, cfg.l1_weight, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), 1.0)
    optimizer.step()
    return {"loss": float(loss.detach())}


def main(cfg: DecoderStageConfig) -> dict[str, float]:
    stage = AutoencoderStageConfig(dataset_id=cfg.dataset_id, data_root=cfg.data_root, val_fraction=cfg.val_fraction,
                                   split_seed=cfg.split_seed, eval_frames=cfg.eval_frames, loop=cfg.loop)
    source = checkpoint.load(Path(cfg.autoencoder_dir) / "checkpoint", cfg.loop.device)
    stage.model = source.config.autoencoder
    data = load_data(stage)
    state = build(cfg, data, source.autoencoder)
    load_state(Path(cfg.run_dir), state)
    metrics = run_loop("decoder", cfg.loop, Path(cfg.run_dir), state, lambda s: train_step(s, data, cfg),
                       lambda s: evaluate(s, data, stage))
    checkpoint.save(Path(cfg.autoencoder_dir) / "checkpoint", source.config, state.modules["autoencoder"],
                    start_frames=source.start_frames, start_actions=source.start_actions)
    return metrics


if __name__ == "__main__":
    hydra_main("decoder", DecoderStageConfig, main)
