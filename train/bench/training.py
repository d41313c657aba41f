"""Section d of the benchmark: training iterations per second of each DiT stage, on synthetic latents.

`training_speed(cfg)` builds every stage the way its own file does (train/stages/teacher.py,
train/stages/forcing.py mode tf/df, train/stages/ode_init.py, train/stages/self_forcing.py — their configs, their
`build_dit_state` / `build`, their `train_step`) on one model size, batch and clip length, then
times a few iterations. The data is synthetic, since speed does not depend on it: random latent
episodes (worldmodel.data.Episode) in memory for the clip sampler, random ODE pairs in the layout
`ode_init.sample_teacher_pairs` returns, and for self forcing the teacher and student checkpoint
directories its `build` loads, written to a temp dir with random weights.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.stages import forcing, ode_init, self_forcing, teacher
from train.bench.common import BenchConfig, PeakMemory, matmul_flops_per_s, memory_in_use_mb, sync
from train.bench.model import flop_counter
from train.common.dit_stage import build_dit_state
from train.common.latents import LatentData
from train.common.loop import LoopConfig, TrainState
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, SamplerConfig, WorldModelConfig
from worldmodel.data import ClipDataset, Episode
from worldmodel.dit import DiT

StepFn = Callable[[TrainState], dict[str, float]]
N_ACTIONS = 5            # actions of the synthetic data (the bundled game's count)
EPISODES = 4             # synthetic latent episodes ...
EPISODE_FRAMES = 64      # ... of this many frames each
PLACEHOLDER_AE_WIDTHS = (8, 8, 8)   # the autoencoder in self forcing's input checkpoints; training never runs it


def synthetic_latents(cfg: BenchConfig) -> LatentData:
    """Random latent episodes shaped like an autoencoder stage's cache (no start bank needed here)."""
    rng = np.random.default_rng(cfg.seed)
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    episodes = [Episode(frames=rng.standard_normal((EPISODE_FRAMES, *shape), dtype=np.float32),
                        actions=rng.integers(N_ACTIONS, size=EPISODE_FRAMES - 1),
                        rewards=(rng.random(EPISODE_FRAMES - 1) < 0.05).astype(np.float32),
                        terminations=np.zeros(EPISODE_FRAMES - 1, np.bool_),
                        truncations=np.zeros(EPISODE_FRAMES - 1, np.bool_)) for _ in range(EPISODES)]
    frames = torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8)
    return LatentData(train=episodes, val=episodes, n_actions=N_ACTIONS, start_frames=frames,
                      start_actions=torch.full((1, 1), N_ACTIONS))


def stage_fields(cfg: BenchConfig) -> dict[str, Any]:
    """The fields every stage shares in the benchmark: same model size, batch, clip length and device."""
    return dict(size=cfg.train_size, batch_size=cfg.train_batch, clip_frames=cfg.train_clip_frames, warmup_steps=1,
                loop=LoopConfig(device=cfg.device, seed=cfg.seed, progress=False))


def synthetic_pairs(cfg: ode_init.ODEInitConfig, latents: LatentData) -> dict[str, torch.Tensor]:
    """Random ODE-init pairs in sample_teacher_pairs' layout: states (N, S, T, C, h, w), targets (N, T, ...)."""
    g = torch.Generator().manual_seed(cfg.loop.seed)
    n, t, s = 4 * cfg.batch_size, cfg.clip_frames, cfg.sampler.max_steps
    shape = latents.train[0].frames.shape[1:]
    return {"states": torch.randn(n, s, t, *shape, generator=g), "targets": torch.randn(n, t, *shape, generator=g),
            "real": torch.randn(n, t, *shape, generator=g),
            "actions": torch.randint(N_ACTIONS + 1, (n, t), generator=g),
            "rewards": torch.zeros(n, t), "terminations": torch.zeros(n, t)}


def write_dit_checkpoint(path: Path, dit: DiT, latents: LatentData) -> Path:
    """A checkpoint dir holding `dit` (random weights) and a placeholder autoencoder, as self forcing's build loads."""
    channels, size = latents.train[0].frames.shape[1:3]
    ae = AutoencoderConfig(latent_channels=channels, frame_size=size * 2 ** AutoencoderConfig.downsample_levels,
                           widths=PLACEHOLDER_AE_WIDTHS)
    config = WorldModelConfig(autoencoder=ae, dit=dit.config, sampler=SamplerConfig(), stage="bench")
    return checkpoint.save(path, config, Autoencoder(ae), dit)


def build_stage(name: str, cfg: BenchConfig, latents: LatentData, tmp: Path, critic_reuse: int = 1
                ) -> tuple[TrainState, StepFn]:
    """(state, one training iteration) of a stage, built as its own module builds it."""
    dataset = ClipDataset(latents.train, cfg.train_clip_frames, latents.n_actions)
    common = stage_fields(cfg)
    torch.manual_seed(cfg.seed)
    if name == "teacher":
        stage = teacher.TeacherConfig(**common)
        state = build_dit_state(stage, DiT(stage.dit_config(latents, causal=False)))
        return state, lambda s: teacher.train_step(s, dataset, stage)
    if name in forcing.MODES:
        stage = forcing.ForcingConfig(mode=name, **common)
        forcing.check_clip_fits(stage)
        state = build_dit_state(stage, DiT(stage.dit_config(latents, causal=True)))
        return state, lambda s: forcing.train_step(s, dataset, stage)
    if name == "ode_init":
        stage = ode_init.ODEInitConfig(**common)
        pairs = synthetic_pairs(stage, latents)
        state = build_dit_state(stage, DiT(stage.dit_config(latents, causal=True)))
        return state, lambda s: ode_init.train_step(s, pairs, stage)
    if name == "self_forcing":
        stage = self_forcing.SelfForcingConfig(teacher_dir=str(tmp / "teacher"), student_dir=str(tmp / "student"),
                                               critic_ratio=cfg.critic_ratio, critic_reuse=critic_reuse, **common)
        for role, causal in (("teacher", False), ("student", True)):
            write_dit_checkpoint(tmp / role / "checkpoint", DiT(stage.dit_config(latents, causal=causal)), latents)
        state = self_forcing.build(stage, latents)
        return state, lambda s: self_forcing.train_step(s, dataset, stage)
    raise ValueError(f"unknown stage {name!r}")


def run_steps(state: TrainState, step: StepFn, count: int, device: str) -> list[float]:
    """Seconds of each of `count` training iterations (the state's step advances as in run_loop)."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step(state)
        sync(device)
        times.append(time.perf_counter() - start)
        state.step += 1
    return times


def stage_speed(name: str, cfg: BenchConfig, latents: LatentData, tmp: Path, matmul_flops: float,
                critic_reuse: int = 1) -> dict[str, float]:
    """Time one stage. Memory: `state_mb` held between iterations (models, EMA, optimiser state; teacher and
    critic for self forcing), `iteration_mb` the peak an iteration adds on top (activations, gradients)."""
    before = memory_in_use_mb(cfg.device)
    state, step = build_stage(name, cfg, latents, tmp, critic_reuse)
    sf = name == "self_forcing"
    if sf:   # warm up on a generator iteration (step critic_ratio - 1), then time whole critic cycles from step 0
        state.step = cfg.critic_ratio - 1
    run_steps(state, step, cfg.train_warmup_iters, cfg.device)
    iters = cfg.train_iters
    if sf:
        state.step = 0
        iters = -(-iters // cfg.critic_ratio) * cfg.critic_ratio
    state_mb = memory_in_use_mb(cfg.device) - before
    with PeakMemory(cfg.device) as peak:
        times = run_steps(state, step, iters, cfg.device)
    if sf:   # count the FLOPs of a generator iteration
        state.step = cfg.critic_ratio - 1
    with flop_counter() as counter:
        step(state)
    flops = counter.get_total_flops()
    seconds = float(np.mean(times))
    out = {"it_per_s": 1.0 / seconds, "s_per_it": seconds, "iters": iters, "state_mb": state_mb,
           "iteration_mb": peak.mb, "peak_memory_mb": state_mb + peak.mb, "gflops_per_it": flops / 1e9,
           "params_m": state.modules["model"].num_params() / 1e6}
    if sf:
        generator_times = times[cfg.critic_ratio - 1::cfg.critic_ratio]
        critic_times = [t for i, t in enumerate(times) if (i + 1) % cfg.critic_ratio]
        out["generator_s_per_it"] = float(np.mean(generator_times))
        out["critic_s_per_it"] = float(np.mean(critic_times)) if critic_times else float("nan")
        out["mfu"] = flops / out["generator_s_per_it"] / matmul_flops
    else:
        out["mfu"] = flops / seconds / matmul_flops
    return out


def training_speed(cfg: BenchConfig, matmul_flops: float | None = None) -> dict[str, Any]:
    """Section d: it/s, memory and MFU of every stage in cfg.stages, plus SF iteration ÷ TF iteration.

    matmul_flops: the measured matmul throughput MFU divides by (measured here when not given)."""
    matmul_flops = matmul_flops_per_s(cfg) if matmul_flops is None else matmul_flops
    latents = synthetic_latents(cfg)
    stages: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dreamgym-bench-train-") as tmp:
        if cfg.stages:   # first use of the kernels and thread pools, so the first stage's memory is its own
            state, step = build_stage(cfg.stages[0], cfg, latents, Path(tmp))
            run_steps(state, step, 1, cfg.device)
            del state, step
        for name in cfg.stages:
            for reuse in (cfg.critic_reuse if name == "self_forcing" else [1]):
                stages[sf_key(reuse) if name == "self_forcing" else name] = stage_speed(name, cfg, latents, Path(tmp),
                                                                                        matmul_flops, reuse)
    out: dict[str, Any] = {"stages": stages, "size": cfg.train_size, "batch": cfg.train_batch,
                           "clip_frames": cfg.train_clip_frames, "critic_ratio": cfg.critic_ratio}
    if "self_forcing" in cfg.stages and "tf" in stages:
        tf = stages["tf"]
        out["sf_over_tf"] = {reuse: stages[sf_key(reuse)]["s_per_it"] / tf["s_per_it"] for reuse in cfg.critic_reuse}
        sf = stages[sf_key(cfg.critic_reuse[0])]
        out["sf_generator_over_tf"] = sf["generator_s_per_it"] / tf["s_per_it"]
        out["sf_memory_over_tf"] = (sf["peak_memory_mb"] / tf["peak_memory_mb"] if tf["peak_memory_mb"] > 0
                                    else float("nan"))
    return out


def sf_key(reuse: int) -> str:
    """The stage row of self forcing timed with `critic_reuse` = reuse."""
    return "self_forcing" if reuse == 1 else f"self_forcing critic_reuse={reuse}"


def training_markdown(fig: dict[str, Any]) -> list[str]:
    lines = [f"DiT preset `{fig['size']}`, batch {fig['batch']}, clips of {fig['clip_frames']} frames, synthetic "
             f"latents; self forcing with {fig['critic_ratio']} critic updates per generator update.", "",
             "| stage | it/s | s/it | state MB | iteration peak MB | peak MB | GFLOPs/it | MFU |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in fig["stages"].items():
        lines.append(f"| {name} | {s['it_per_s']:.2f} | {s['s_per_it']:.3f} | {s['state_mb']:.1f} | "
                     f"{s['iteration_mb']:.1f} | "
                     f"{s['peak_memory_mb']:.1f} | {s['gflops_per_it']:.2f} | {s['mfu']:.1%} |")
        if name.startswith("self_forcing"):
            for part in ("generator", "critic"):
                seconds = s[f"{part}_s_per_it"]
                lines.append(f"| ↳ {part} iteration | {1 / seconds:.2f} | {seconds:.3f} | | | | | |")
    if "sf_over_tf" in fig:
        ratios = ", ".join(f"**{ratio:.2f}** with critic_reuse={reuse}" for reuse, ratio in fig["sf_over_tf"].items())
        lines += ["", f"SF iteration ÷ TF iteration (same model, batch and clip), averaged over whole critic cycles: "
                  f"{ratios}; {fig['sf_generator_over_tf']:.2f} for a generator iteration; "
                  f"peak memory SF ÷ TF {fig['sf_memory_over_tf']:.2f}."]
    return lines
