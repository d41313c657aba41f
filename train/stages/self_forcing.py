"""Stage 4 (last): Self Forcing (Huang et al. 2025, arXiv 2506.08009) — train on the model's own rollouts.

Each iteration the student (initialised from ODE init) primes a KV cache with a real prefix and
unrolls the rest of the clip under the real actions with `worldmodel.rollout.unroll` — the very
code `env.step` runs. One exit step, drawn per iteration and agreed across ranks, keeps gradients;
all other denoising steps and every cache write run without. The generated clip is scored by
distribution matching against the frozen bidirectional teacher (real score, classifier-free
guided) and a critic (fake score, initialised from the teacher, trained with the flow loss on the
student's detached clips, `critic_ratio` critic updates per generator update, each on a fresh
rollout or, with `critic_reuse` > 1, on a rollout shared by that many consecutive critic updates):
DMD, SiD and GAN losses, weighted in the config. A clean causal pass on the real clip keeps the
reward/termination heads trained. EMA of the generator is what the checkpoint ships.

    python -m train.stages.self_forcing dmd_weight=1 sid_weight=0 gan_weight=0 loop.max_steps=600
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.common import distributed
from train.common.cli import hydra_main
from train.common.dit_stage import (DistillStageConfig, build_dit_state, ema_update, flow_loss, head_loss,
                                    known_previous, load_prefixed_clip_data, optimizer_step, overlap_cells,
                                    rebuild_dit, sample_clips, save_world_model, set_lr)
from train.common.losses import (DiscriminatorHead, dmd_loss, finite_difference_penalty, gan_discriminator_loss,
                                 gan_generator_loss, sid_loss)
from train.common.loop import LoopConfig, TrainState, autocast, load_state, run_loop
from worldmodel import checkpoint
from worldmodel.dit import DiT
from worldmodel.events import cell_maps
from worldmodel.flow import add_noise, sample_training_sigma, sigma_schedule, x0_from_v
from worldmodel.masks import block_causal_mask
from worldmodel.rollout import new_cache, prime, unroll


@dataclass
class SelfForcingConfig(DistillStageConfig):      # teacher_dir: the real score (frozen) and the critic's init
    run_dir: str = "runs/game/self_forcing"
    student_dir: str = "runs/game/ode_init"         # generator init
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=600, eval_every=0, ckpt_every=50))
    lr: float = 2e-5                  # generator lr (> critic lr, as in the paper)
    critic_lr: float = 1e-5
    betas: tuple[float, float] = (0.0, 0.999)
    grad_clip: float = 10.0
    ema_decay: float = 0.99
    warmup_steps: int = 0
    critic_ratio: int = 5             # critic updates per generator update
    critic_reuse: int = 1             # consecutive critic updates one rollout serves (1 = a fresh rollout each, as
                                      #   the paper); the generator is fixed between its updates, so a reused
                                      #   rollout is a sample of the same distribution, re-noised each update
    sigma_min: float = 0.02           # DMD/SiD/GAN noise levels ~ shift(U(sigma_min, sigma_max))
    sigma_max: float = 0.98
    dmd_weight: float = 1.0
    sid_weight: float = 0.0
    sid_alpha: float = 1.0
    gan_weight: float = 0.0
    gan_critic_weight: float = 1.0    # weight of the discriminator loss in the critic update
    gan_sigma_max: float = 0.0        # > 0: the discriminator sees clips noised at sigma ~ U(0, gan_sigma_max) (a
                                      #   wrong count of sprites is visible at low noise), not the DMD levels
    r1_weight: float = 0.0            # finite-difference R1 on real clips
    r2_weight: float = 0.0            # finite-difference R2 on generated clips
    penalty_scale: float = 0.05       # perturbation size of the finite differences


def self_rollout(model: DiT, batch: dict[str, torch.Tensor], cfg: SelfForcingConfig, exit_step: int, grad: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Real prefix + the student's own continuation: clip (B, T, C, h, w), weight (B, T) = 1 on generated frames,
    and the clip's entity maps (B, T, E, h, w): the real prefix's, then those the student drew (None without events)."""
    latents, actions = batch["latents"], batch["actions"]
    b, t = actions.shape
    k = cfg.prefix_frames
    device = latents.device
    noise = lambda shape: torch.randn(shape, generator=generator).to(device)  # noqa: E731
    cache = new_cache(model, b, device)
    with torch.no_grad():
        prime(model, cache, latents[:, :k], actions[:, :k])
    sigmas = sigma_schedule(cfg.sampler.max_steps, cfg.sampler.shift)
    with torch.set_grad_enabled(grad):
        generated = unroll(model, cache, actions[:, k:], sigmas, noise, exit_step, grad, cfg.sampler.event_min_prob)
    clip = torch.cat([latents[:, :k], generated.latents], 1)
    weight = (torch.arange(t, device=device) >= k).float().expand(b, t)
    events = None
    if generated.events is not None:
        events = torch.cat([batch["events"][:, :k], cell_maps(generated.events, clip.shape[-1])], 1)
    return clip, weight, events


def score_x0(model: DiT, noisy: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor, guidance: float,
             events: torch.Tensor | None) -> torch.Tensor:
    """x0 prediction of a bidirectional score model (teacher with CFG, or critic with guidance 1)."""
    return x0_from_v(noisy, model.guided_velocity(noisy, sigma, actions, guidance, events=events).float(), sigma)


def noise_clip(clip: torch.Tensor, weight: torch.Tensor, cfg: SelfForcingConfig, generator: torch.Generator,
               per_frame: bool, gan: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise generated frames (prefix stays clean): noisy (B, T, ...), sigma (B, T), noise.

    sigma ~ shift(U(sigma_min, sigma_max)), or with `gan` and gan_sigma_max > 0, U(0, gan_sigma_max)."""
    b, t = weight.shape
    shape = (b, t) if per_frame else (b, 1)
    if gan and cfg.gan_sigma_max > 0:
        sigma = sample_training_sigma(shape, 1.0, generator, low=0.0, high=cfg.gan_sigma_max)
    else:
        sigma = sample_training_sigma(shape, cfg.sampler.shift, generator, low=cfg.sigma_min, high=cfg.sigma_max)
    sigma = sigma.to(clip.device).expand(b, t) * weight
    noise = torch.randn(clip.shape, generator=generator).to(clip.device)
    return add_noise(clip, noise, sigma), sigma, noise


def unpainted(real_x0: torch.Tensor, fake_x0: torch.Tensor, painted: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two scores' x0 predictions (B, T, C, h, w) with the fake one standing in for the real one on the `painted`
    cells (B, T, 1, h, w) (paint_overlaps): no distribution-matching gradient where the rollout paints."""
    if painted is None:
        return real_x0, fake_x0
    return torch.where(painted, fake_x0, real_x0), fake_x0


def generator_loss(state: TrainState, clip: torch.Tensor, weight: torch.Tensor, actions: torch.Tensor,
                   events: torch.Tensor | None, cfg: SelfForcingConfig) -> dict[str, torch.Tensor]:
    teacher, critic, g = state.modules["teacher"], state.modules["critic"], state.generator
    noisy, sigma, _ = noise_clip(clip, weight, cfg, g, per_frame=False)
    losses: dict[str, torch.Tensor] = {}
    painted = overlap_cells(events) if cfg.paint_overlaps and events is not None else None
    if cfg.dmd_weight:
        with torch.no_grad(), autocast(cfg.loop):
            real_x0 = score_x0(teacher, noisy, sigma, actions, cfg.guidance, events)
            fake_x0 = score_x0(critic, noisy, sigma, actions, 1.0, events)
        losses["dmd"] = cfg.dmd_weight * dmd_loss(clip, *unpainted(real_x0, fake_x0, painted), weight)
    if cfg.sid_weight:   # gradients through both frozen score networks' inputs (see losses.sid_loss)
        critic.requires_grad_(False)
        with autocast(cfg.loop):
            real_x0 = score_x0(teacher, noisy, sigma, actions, cfg.guidance, events)
            fake_x0 = score_x0(critic, noisy, sigma, actions, 1.0, events)
        critic.requires_grad_(True)
        real_x0, fake_x0 = unpainted(real_x0, fake_x0, painted)
        losses["sid"] = cfg.sid_weight * sid_loss(clip, real_x0, fake_x0, weight, cfg.sid_alpha)
    if cfg.gan_weight:
        if cfg.gan_sigma_max > 0:
            noisy, sigma, _ = noise_clip(clip, weight, cfg, g, per_frame=False, gan=True)
        critic.requires_grad_(False)
        with autocast(cfg.loop):
            logits = state.modules["disc"](critic(noisy, sigma, actions, events=events).features)
        critic.requires_grad_(True)
        losses["gan_g"] = cfg.gan_weight * gan_generator_loss(logits, weight)
    return losses


def critic_loss(state: TrainState, clip: torch.Tensor, weight: torch.Tensor, events: torch.Tensor | None,
                batch: dict[str, torch.Tensor], cfg: SelfForcingConfig) -> dict[str, torch.Tensor]:
    """Flow loss of the fake score on the student's (detached) clip given its drawn entity events, plus the
    discriminator if GAN is on."""
    critic, g = state.modules["critic"], state.generator
    noisy, sigma, noise = noise_clip(clip, weight, cfg, g, per_frame=True)
    with autocast(cfg.loop):
        out = critic(noisy, sigma, batch["actions"], events=events)
    losses = {"critic_flow": flow_loss(out.velocity, clip, noise, weight)}
    if cfg.gan_weight:
        disc = state.modules["disc"]
        if cfg.gan_sigma_max > 0:          # the discriminator's own noise levels: one more critic pass
            noisy, sigma, noise = noise_clip(clip, weight, cfg, g, per_frame=True, gan=True)
            with autocast(cfg.loop):
                fake_features = critic(noisy, sigma, batch["actions"], events=events).features
        else:
            fake_features = out.features
        real_noisy = add_noise(batch["latents"], noise, sigma)
        with autocast(cfg.loop):
            real_logits = disc(critic(real_noisy, sigma, batch["actions"], events=batch["events"]).features)
        fake_logits = disc(fake_features)
        losses["disc"] = cfg.gan_critic_weight * gan_discriminator_loss(real_logits, fake_logits, weight)
        for name, scale, source, logits, maps in (("r1", cfg.r1_weight, real_noisy, real_logits, batch["events"]),
                                                  ("r2", cfg.r2_weight, noisy, fake_logits, events)):
            if scale:
                bumped = source + cfg.penalty_scale * torch.randn(source.shape, generator=g).to(source.device)
                with autocast(cfg.loop):
                    bumped_logits = disc(critic(bumped, sigma, batch["actions"], events=maps).features)
                losses[name] = scale * finite_difference_penalty(logits, bumped_logits, cfg.penalty_scale, weight)
    return losses


def train_step(state: TrainState, dataset, cfg: SelfForcingConfig) -> dict[str, float]:
    model: DiT = state.modules["model"]
    shared = torch.Generator().manual_seed(cfg.loop.seed * 1_000_003 + state.step)   # same on every rank
    exit_step = int(torch.randint(cfg.sampler.max_steps, (1,), generator=shared))
    update_generator = (state.step + 1) % cfg.critic_ratio == 0     # the critic warms up first; logged steps see it
    metrics: dict[str, float] = {"exit_step": float(exit_step)}
    set_lr(state, cfg, "model", cfg.lr)
    set_lr(state, cfg, "critic", cfg.critic_lr)
    fresh = update_generator or (state.step % cfg.critic_ratio) % cfg.critic_reuse == 0
    reused = state.scratch.get("critic_rollouts", [])
    for micro in range(cfg.loop.grad_accum):
        if fresh or micro >= len(reused):
            batch = sample_clips(dataset, cfg, state.generator)
            clip, weight, events = self_rollout(model, batch, cfg, exit_step, update_generator, state.generator)
            if not update_generator:
                state.scratch["critic_rollouts"] = reused = (reused if micro else []) + [(batch, clip, weight, events)]
        else:
            batch, clip, weight, events = reused[micro]
        if update_generator:
            losses = generator_loss(state, clip, weight, batch["actions"], events, cfg)
            with autocast(cfg.loop):
                heads = model(batch["latents"], torch.zeros_like(weight), batch["actions"],
                              block_causal_mask(weight.shape[1], cfg.chunk, clip.device))
            losses["heads"] = cfg.head_weight * head_loss(heads, batch, cfg.event_weight,
                                                          known_previous(batch["actions"], model.null_action))
            (sum(losses.values()) / cfg.loop.grad_accum).backward()
            metrics.update({f"gen_{k}": metrics.get(f"gen_{k}", 0.0) + float(v.detach()) / cfg.loop.grad_accum
                            for k, v in losses.items()})
        critic_losses = critic_loss(state, clip.detach(), weight, events, batch, cfg)
        (sum(critic_losses.values()) / cfg.loop.grad_accum).backward()
        metrics.update({k: metrics.get(k, 0.0) + float(v.detach()) / cfg.loop.grad_accum
                        for k, v in critic_losses.items()})
    if update_generator:
        metrics["gen_grad_norm"] = optimizer_step(state, cfg, "model")
        ema_update(state.modules["ema"], model, cfg.ema_decay)
    critic_group = torch.nn.ModuleList([state.modules[n] for n in ("critic", "disc") if n in state.modules])
    metrics["critic_grad_norm"] = optimizer_step(state, cfg, "critic", critic_group)
    return metrics


def build(cfg: SelfForcingConfig, latents) -> TrainState:
    if cfg.critic_ratio < 1 or cfg.critic_reuse < 1:
        raise ValueError(f"critic_ratio and critic_reuse must be >= 1, got {cfg.critic_ratio} and {cfg.critic_reuse}")
    teacher = checkpoint.load(Path(cfg.teacher_dir) / "checkpoint", cfg.loop.device).dit.requires_grad_(False)
    student = checkpoint.load(Path(cfg.student_dir) / "checkpoint", cfg.loop.device).dit
    # trained without the score bar and the overlap paint, installed after (the pipeline installs them into the
    # student's checkpoint too, at its end): so a resumed run builds the same model as the run that wrote its state
    if student.config.score_digits:
        student = rebuild_dit(student, "score_bar", score_digits=0, score_pixels=0)
    if student.config.overlap_paint:
        student = rebuild_dit(student, "overlap_latents", overlap_paint=False)
    if not student.config.causal or teacher.config.causal:
        raise ValueError("self forcing needs a causal student (ode_init / tf / df) and a bidirectional teacher")
    stored, stage = ((student.config.chunk, student.config.window, student.config.sink),
                     (cfg.chunk, cfg.window, cfg.sink))
    if stored != stage:   # the stage config is the one source: a student made with other shapes is refused
        raise ValueError(f"student has chunk/window/sink {'/'.join(map(str, stored))}, "
                         f"config says {'/'.join(map(str, stage))}")
    critic = copy.deepcopy(teacher).requires_grad_(True).train()
    extra = {"teacher": teacher, "critic": critic}
    critic_params = list(critic.parameters())
    if cfg.gan_weight:
        extra["disc"] = DiscriminatorHead(critic.config.dim).to(cfg.loop.device)
        critic_params += list(extra["disc"].parameters())
    state = build_dit_state(cfg, student.train(), extra)
    distributed.broadcast_parameters(critic)
    state.optimizers["critic"] = torch.optim.AdamW(critic_params, lr=cfg.critic_lr, betas=tuple(cfg.betas),
                                                   weight_decay=cfg.weight_decay)
    return state


def main(cfg: SelfForcingConfig) -> dict[str, float]:
    latents, train = load_prefixed_clip_data(cfg)
    run_dir = Path(cfg.run_dir)
    state = build(cfg, latents)
    load_state(run_dir, state)
    stage = "self_forcing_" + "+".join(n for n, w in (("dmd", cfg.dmd_weight), ("sid", cfg.sid_weight),
                                                      ("gan", cfg.gan_weight)) if w)
    return run_loop("self_forcing", cfg.loop, run_dir, state, lambda s: train_step(s, train, cfg),
                    on_save=lambda s: save_world_model(cfg, s, latents, stage))


if __name__ == "__main__":
    hydra_main("self_forcing", SelfForcingConfig, main)
