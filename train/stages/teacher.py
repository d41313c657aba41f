"""Stage 2: the bidirectional action-conditioned teacher (real score for DMD, critic init).

Reads the latent cache of the autoencoder stage. Clips of T frames, per-frame independent noise
levels; with probability `clean_prefix_prob` a random prefix is clean (sigma = 0, no loss) so the
teacher also continues a real context; actions are dropped to the null action with probability
`action_dropout` per clip for classifier-free guidance. Writes <run_dir>/checkpoint.

    python -m train.stages.teacher loop.max_steps=2000
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.common.cli import hydra_main
from train.common.dit_stage import (DiTStageConfig, accumulated_step, build_dit_state, evaluate_flow, flow_loss,
                                    flow_weights, load_clip_data, loss_cells, noisy_clip, sample_clips,
                                    save_world_model)
from train.common.loop import LoopConfig, TrainState, autocast, load_state, run_loop
from worldmodel.dit import DiT
from worldmodel.flow import sample_training_sigma


@dataclass
class TeacherConfig(DiTStageConfig):
    run_dir: str = "runs/game/teacher"
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=2000, eval_every=500, ckpt_every=200))
    train_shift: float = 3.0          # sigma ~ shift(U(0,1)) during training
    clean_prefix_prob: float = 0.5    # chance a clip starts with a clean real prefix of 1..T-1 frames
    shared_sigma_prob: float = 0.0    # chance a clip's noised frames share one sigma (as ODE init and DMD noise them)
    action_dropout: float = 0.1       # chance a clip's actions are all replaced by the null action

    def __post_init__(self) -> None:
        for name in ("clean_prefix_prob", "shared_sigma_prob", "action_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")


def teacher_batch(state: TrainState, dataset, cfg: TeacherConfig, null_action: int) -> dict[str, torch.Tensor]:
    """A clip with per-frame sigma (B, T), clean prefixes, dropped actions and a loss weight (B, T)."""
    batch = sample_clips(dataset, cfg, state.generator)
    b, t = batch["actions"].shape
    g = state.generator
    sigma = sample_training_sigma((b, t), cfg.train_shift, g)
    shared = torch.rand(b, 1, generator=g) < cfg.shared_sigma_prob
    sigma = torch.where(shared, sigma[:, -1:], sigma)
    prefix_len = torch.randint(1, t, (b, 1), generator=g) * (torch.rand(b, 1, generator=g) < cfg.clean_prefix_prob)
    in_prefix = torch.arange(t)[None, :] < prefix_len                                   # (B, T)
    sigma = torch.where(in_prefix, torch.zeros_like(sigma), sigma)
    drop = torch.rand(b, 1, generator=g) < cfg.action_dropout
    device = cfg.loop.device
    first_known = flow_weights(batch, null_action)               # before the dropout
    batch["actions"] = torch.where(drop.to(device), torch.full_like(batch["actions"], null_action), batch["actions"])
    batch["sigma"] = sigma.to(device)
    batch["weight"] = (~in_prefix).float().to(device) * first_known
    return batch


def train_step(state: TrainState, dataset, cfg: TeacherConfig) -> dict[str, float]:
    model: DiT = state.modules["model"]

    def micro_loss() -> tuple[torch.Tensor, torch.Tensor]:
        batch = teacher_batch(state, dataset, cfg, model.null_action)
        noisy, noise = noisy_clip(batch, batch["sigma"], state.generator)
        with autocast(cfg.loop):
            out = model(noisy, batch["sigma"], batch["actions"], events=batch["events"])
        cells = loss_cells(batch["latents"], batch["events"], cfg)
        loss = flow_loss(out.velocity, batch["latents"], noise, batch["weight"], cells)
        return loss, loss
    return accumulated_step(state, cfg, micro_loss)


def main(cfg: TeacherConfig) -> dict[str, float]:
    run_dir = Path(cfg.run_dir)
    latents, train, val = load_clip_data(cfg)
    torch.manual_seed(cfg.loop.seed)
    state = build_dit_state(cfg, DiT(cfg.dit_config(latents, causal=False)))
    load_state(run_dir, state)
    return run_loop("teacher", cfg.loop, run_dir, state, lambda s: train_step(s, train, cfg),
                    lambda s: evaluate_flow(s.modules["ema"], val, cfg, None),
                    lambda s: save_world_model(cfg, s, latents, "teacher"))


if __name__ == "__main__":
    hydra_main("teacher", TeacherConfig, main)
