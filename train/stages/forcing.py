"""Baselines beside stages 3-4: causal DiT trained with teacher forcing (tf) or diffusion forcing (df).

Same architecture and data as the Self Forcing student, so they are rows of one eval table.
- tf: every noisy frame sees the *clean* real frames of earlier chunks (a [clean | noisy] sequence
  with `worldmodel.masks.teacher_forcing_mask`); the clean half trains the reward/termination heads.
- df: per-frame independent noise levels under the block-causal mask (noisy context); a clean
  causal pass of the same clip trains the heads.
Both then generate with clean cached context at inference (worldmodel.rollout). Self Forcing
(train/stages/self_forcing.py) removes the gap between these training contexts and the model's own.

    python -m train.stages.forcing mode=tf      # or mode=df
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.common.cli import hydra_main
from train.common.dit_stage import (DiTStageConfig, accumulated_step, build_dit_state, check_clip_fits, evaluate_flow,
                                    flow_loss, flow_weights, head_loss, known_previous, load_clip_data, loss_cells,
                                    noisy_clip, sample_clips, save_world_model)
from train.common.loop import LoopConfig, TrainState, autocast, load_state, run_loop
from worldmodel.dit import DiT
from worldmodel.flow import sample_training_sigma
from worldmodel.masks import block_causal_mask, teacher_forcing_mask, teacher_forcing_previous

MODES = ("tf", "df")


@dataclass
class ForcingConfig(DiTStageConfig):
    mode: str = "tf"                  # tf = teacher forcing, df = diffusion forcing
    run_dir: str = "runs/game/tf"
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=2000, eval_every=500, ckpt_every=200))
    train_shift: float = 3.0          # sigma ~ shift(U(0,1)) per frame


def tf_loss(model: DiT, batch: dict[str, torch.Tensor], sigma: torch.Tensor, generator: torch.Generator,
            cfg: ForcingConfig) -> torch.Tensor:
    latents, actions = batch["latents"], batch["actions"]
    t = latents.shape[1]
    noisy, noise = noisy_clip(batch, sigma, generator)
    both = torch.cat([latents, noisy], dim=1)                                          # (B, 2T, C, h, w)
    positions = torch.arange(t, device=latents.device).repeat(2)           # clean and noisy frame i share time i
    with autocast(cfg.loop):
        out = model(both, torch.cat([torch.zeros_like(sigma), sigma], dim=1), actions.repeat(1, 2),
                    teacher_forcing_mask(t, cfg.chunk, latents.device), positions,
                    previous=teacher_forcing_previous(latents, noisy, cfg.chunk),
                    events=None if batch["events"] is None else batch["events"].repeat(1, 2, 1, 1, 1))
    clean_heads = type(out)(out.velocity[:, :t], out.reward[:, :t], out.termination[:, :t], out.features[:, :t])
    weight = known_previous(actions, model.null_action)
    cells = loss_cells(latents, batch["events"], cfg)
    return (flow_loss(out.velocity[:, t:], latents, noise, flow_weights(batch, model.null_action), cells)
            + cfg.head_weight * head_loss(clean_heads, batch, cfg.event_weight, weight))


def df_loss(model: DiT, batch: dict[str, torch.Tensor], sigma: torch.Tensor, generator: torch.Generator,
            cfg: ForcingConfig) -> torch.Tensor:
    latents, actions = batch["latents"], batch["actions"]
    t = latents.shape[1]
    mask = block_causal_mask(t, cfg.chunk, latents.device)
    noisy, noise = noisy_clip(batch, sigma, generator)
    with autocast(cfg.loop):
        out = model(noisy, sigma, actions, mask, events=batch["events"])
        clean = model(latents, torch.zeros_like(sigma), actions, mask)
    weight = known_previous(actions, model.null_action)
    cells = loss_cells(latents, batch["events"], cfg)
    return (flow_loss(out.velocity, latents, noise, flow_weights(batch, model.null_action), cells)
            + cfg.head_weight * head_loss(clean, batch, cfg.event_weight, weight))


def train_step(state: TrainState, dataset, cfg: ForcingConfig) -> dict[str, float]:
    model: DiT = state.modules["model"]
    loss_fn = tf_loss if cfg.mode == "tf" else df_loss

    def micro_loss() -> tuple[torch.Tensor, torch.Tensor]:
        batch = sample_clips(dataset, cfg, state.generator)
        sigma = sample_training_sigma(tuple(batch["actions"].shape), cfg.train_shift,
                                      state.generator).to(cfg.loop.device)
        loss = loss_fn(model, batch, sigma, state.generator, cfg)
        return loss, loss
    return accumulated_step(state, cfg, micro_loss)


def main(cfg: ForcingConfig) -> dict[str, float]:
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    check_clip_fits(cfg)
    run_dir = Path(cfg.run_dir)
    latents, train, val = load_clip_data(cfg)
    torch.manual_seed(cfg.loop.seed)
    state = build_dit_state(cfg, DiT(cfg.dit_config(latents, causal=True)))
    load_state(run_dir, state)
    mask = block_causal_mask(cfg.clip_frames, cfg.chunk, cfg.loop.device)
    return run_loop(cfg.mode, cfg.loop, run_dir, state, lambda s: train_step(s, train, cfg),
                    lambda s: evaluate_flow(s.modules["ema"], val, cfg, mask),
                    lambda s: save_world_model(cfg, s, latents, cfg.mode))


if __name__ == "__main__":
    hydra_main("forcing", ForcingConfig, main)
