"""Stage 3: ODE initialisation of the few-step causal student (Self Forcing §4, CausVid).

Reads the teacher checkpoint and the latent cache. First samples teacher trajectories: after a
real clean prefix, the bidirectional teacher (classifier-free guided on the real actions)
integrates the probability-flow ODE with `euler_steps` Euler steps, and the states at the
few-step sigmas are kept with the final sample. Then the causal student regresses the final
sample's x0 from those states — a random step per frame, clean teacher-sampled context of earlier
frames through the teacher-forcing mask (what its KV cache will hold). The student starts from
the teacher's weights (same parameter set, causal mask). The reward/termination heads train on a
clean causal pass of the real clip. Writes <run_dir>/checkpoint.

    python -m train.stages.ode_init teacher_dir=runs/coinchase/teacher loop.max_steps=1000
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from train.common import distributed
from train.common.cli import hydra_main
from train.common.dit_stage import (DistillStageConfig, accumulated_step, build_dit_state, head_loss, known_previous,
                                    load_prefixed_clip_data, loss_cells, sample_clips, save_world_model)
from train.common.loop import LoopConfig, TrainState, autocast, load_state, run_loop
from worldmodel import checkpoint
from worldmodel.checkpoint import read_tensors, write_dir_atomically
from worldmodel.dit import DiT
from worldmodel.events import cell_maps
from worldmodel.flow import euler_sample, ode_sigmas, sigma_schedule, x0_from_v
from worldmodel.masks import block_causal_mask, teacher_forcing_mask, teacher_forcing_previous

PAIRS_FILE = "ode_pairs.safetensors"


@dataclass
class ODEInitConfig(DistillStageConfig):
    run_dir: str = "runs/game/ode_init"
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=1000, eval_every=0, ckpt_every=200))
    trajectories: int = 512           # teacher clips sampled once, then regressed on
    euler_steps: int = 48             # ODE steps (a multiple of sampler.max_steps)
    sample_batch: int = 64            # clips per teacher sampling batch


@torch.no_grad()
def sample_teacher_pairs(teacher: DiT, dataset, cfg: ODEInitConfig,
                         generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Trajectories: states (N, S, T, C, h, w) at the S few-step sigmas (prefix frames clean), targets (N, T, ...)."""
    k, few = cfg.prefix_frames, sigma_schedule(cfg.sampler.max_steps, cfg.sampler.shift)
    if cfg.euler_steps % cfg.sampler.max_steps:
        raise ValueError(f"euler_steps {cfg.euler_steps} must be a multiple of "
                         f"sampler.max_steps {cfg.sampler.max_steps}")
    out: dict[str, list[torch.Tensor]] = {"states": [], "targets": [], "actions": [], "real": [], "rewards": [],
                                          "terminations": []}
    for _ in range(0, cfg.trajectories, cfg.sample_batch):
        batch = sample_clips(dataset, replace(cfg, batch_size=cfg.sample_batch), generator)
        prefix, actions = batch["latents"][:, :k], batch["actions"]
        b, t = actions.shape

        def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
            sig = torch.cat([torch.zeros(b, k), torch.full((b, t - k), sigma)], 1).to(x.device)
            return teacher.guided_velocity(torch.cat([prefix, x], 1), sig, actions, cfg.guidance,
                                           events=batch["events"])[:, k:]

        noise = torch.randn(b, t - k, *prefix.shape[2:], generator=generator).to(prefix.device)
        sample, states = euler_sample(velocity, noise, ode_sigmas(cfg.euler_steps, cfg.sampler.shift), keep=few)
        stacked = torch.stack([torch.cat([prefix, states[s]], 1) for s in few], 1)       # (B, S, T, C, h, w)
        out["states"].append(stacked.cpu())
        out["targets"].append(torch.cat([prefix, sample], 1).cpu())
        for key, value in (("actions", actions), ("real", batch["latents"]), ("rewards", batch["rewards"]),
                           ("terminations", batch["terminations"]), ("event_cells", batch.get("event_cells"))):
            if value is not None:
                out.setdefault(key, []).append(value.cpu())
    return {key: torch.cat(values)[:cfg.trajectories].contiguous() for key, values in out.items()}


def load_or_sample_pairs(cfg: ODEInitConfig, dataset) -> dict[str, torch.Tensor]:
    """The teacher trajectories, sampled once per run dir (rank 0) and reused on resume."""
    directory = Path(cfg.run_dir) / "pairs"
    if not (directory / PAIRS_FILE).exists() and distributed.is_main():
        teacher = checkpoint.load(Path(cfg.teacher_dir) / "checkpoint", cfg.loop.device).dit
        pairs = sample_teacher_pairs(teacher, dataset, cfg, torch.Generator().manual_seed(cfg.loop.seed + 7))
        write_dir_atomically(directory, lambda tmp: save_file(pairs, str(tmp / PAIRS_FILE)))
    if distributed.world_size() > 1:
        torch.distributed.barrier()
    return read_tensors(directory / PAIRS_FILE)


def train_step(state: TrainState, pairs: dict[str, torch.Tensor], cfg: ODEInitConfig) -> dict[str, float]:
    model: DiT = state.modules["model"]
    few = torch.tensor(sigma_schedule(cfg.sampler.max_steps, cfg.sampler.shift))
    k, device, g = cfg.prefix_frames, cfg.loop.device, state.generator

    def micro_loss() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(pairs["targets"]), (cfg.batch_size,), generator=g)
        targets, actions = pairs["targets"][index].to(device), pairs["actions"][index].to(device)
        b, t = actions.shape
        step = torch.randint(len(few), (b, t), generator=g)                                   # random step per frame
        states = pairs["states"][index].to(device)                                           # (B, S, T, C, h, w)
        noisy = states[torch.arange(b)[:, None], step, torch.arange(t)[None, :]]             # (B, T, C, h, w)
        sigma = few[step].to(device)
        sigma[:, :k] = 0.0
        both = torch.cat([targets, noisy], 1)
        events = (cell_maps(pairs["event_cells"][index].to(device), targets.shape[-1]).repeat(1, 2, 1, 1, 1)
                  if "event_cells" in pairs else None)                                      # (B, 2T, E, h, w)
        with autocast(cfg.loop):
            out = model(both, torch.cat([torch.zeros_like(sigma), sigma], 1), actions.repeat(1, 2),
                        teacher_forcing_mask(t, cfg.chunk, device), torch.arange(t, device=device).repeat(2),
                        previous=teacher_forcing_previous(targets, noisy, cfg.chunk), events=events)
            real = {"latents": pairs["real"][index].to(device), "rewards": pairs["rewards"][index].to(device),
                    "terminations": pairs["terminations"][index].to(device)}
            heads = model(real["latents"], torch.zeros_like(sigma), actions, block_causal_mask(t, cfg.chunk, device))
        x0 = x0_from_v(noisy, out.velocity[:, t:].float(), sigma)
        cells = loss_cells(targets, None if events is None else events[:, :t], cfg)        # (B, T, 1, h, w)
        regression = (((x0 - targets) ** 2 * cells)[:, k:].mean() / cells[:, k:].mean())
        loss = regression + cfg.head_weight * head_loss(heads, real, cfg.event_weight,
                                                        known_previous(actions, model.null_action))
        return loss, regression
    return accumulated_step(state, cfg, micro_loss, "x0_loss")


def main(cfg: ODEInitConfig) -> dict[str, float]:
    latents, train = load_prefixed_clip_data(cfg)
    run_dir = Path(cfg.run_dir)
    pairs = load_or_sample_pairs(cfg, train)
    teacher = checkpoint.load(Path(cfg.teacher_dir) / "checkpoint").dit
    student = DiT(replace(teacher.config, causal=True, chunk=cfg.chunk, window=cfg.window, sink=cfg.sink))
    student.load_state_dict(teacher.state_dict())                     # same parameters; only the mask differs
    state = build_dit_state(cfg, student)
    load_state(run_dir, state)
    return run_loop("ode_init", cfg.loop, run_dir, state, lambda s: train_step(s, pairs, cfg),
                    on_save=lambda s: save_world_model(cfg, s, latents, "ode_init"))


if __name__ == "__main__":
    hydra_main("ode_init", ODEInitConfig, main)
