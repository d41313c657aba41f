"""Section b of the benchmark: how fast the world model dreams, through the same code the envs run.

Every figure steps `envs.dream.DreamCore` (the batched core of WorldModelEnv and
WorldModelVectorEnv) or the vector env itself: ms per frame at each batch size and denoising-step
count, the marginal ms of one denoising step, keypress-to-frame latency split into dreaming and
decoding, FLOPs per frame (torch's FlopCounterMode on one real step) against the FLOP-bound
limit of this machine's measured matmul throughput, frame time and memory at a late frame
against an early one, and VectorEnv frames/s.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from envs.dream import DreamCore, pick_dtype
from envs.world_model_env import WorldModelVectorEnv
from train.bench.common import BenchConfig, memory_in_use_mb, sync
from train.common.untrained import BUNDLED_ENV_ID, save_untrained

HORIZON_GOAL = 1.1    # frame time at the late frame ÷ early frame (cost per frame must not grow with the horizon)
DIT_MODULE = "DiT"    # FlopCounterMode's name for the DiT's own forward; everything else in a step is decoding


def model_checkpoint(cfg: BenchConfig, tmp: Path) -> Path:
    """cfg.checkpoint (of any game), or an untrained checkpoint of the configured size of cfg.env_id's game (the
    bundled game by default) written under `tmp`."""
    if cfg.checkpoint is not None:
        return Path(cfg.checkpoint)
    return save_untrained(tmp / "untrained", size=cfg.untrained_size, widths=tuple(cfg.untrained_widths),
                          env_id=cfg.env_id or BUNDLED_ENV_ID)


def primed_core(path: Path, batch: int, steps: int, cfg: BenchConfig, dtype: str | None = None) -> DreamCore:
    """A DreamCore of `batch` rows primed with the checkpoint's real start contexts, in `dtype` (default cfg.dtype)."""
    core = DreamCore(path, batch, cfg.device, dtype or cfg.dtype, denoise_steps=steps, cuda_graph=cfg.cuda_graph,
                     compile=cfg.compile)
    rows = np.arange(batch)
    contexts = [core.start_context(int(r) % core.bank_size) for r in rows]
    core.reset_rows(rows, [cfg.seed + int(r) for r in rows], np.stack([c[0] for c in contexts]),
                    np.stack([c[1] for c in contexts]))
    return core


def step_ms(core: DreamCore, frames: int, rng: np.random.Generator) -> list[float]:
    """Wall ms of `frames` batched steps under random actions (DreamStep.step_ms: denoise + cache write + decode)."""
    return [core.step(rng.integers(core.n_actions, size=core.num_envs)).step_ms for _ in range(frames)]


def timed_point(core: DreamCore, cfg: BenchConfig, rng: np.random.Generator) -> float:
    """Median ms of one batched step after the warm-up."""
    step_ms(core, cfg.warmup_frames, rng)
    return float(np.median(step_ms(core, cfg.timed_frames, rng)))


def decode_ms(core: DreamCore, batch: int, cfg: BenchConfig) -> float:
    """Median ms of decoding `batch` latents to uint8 frames (the part of a step after dreaming)."""
    dit = core.dit.config
    latents = torch.randn(batch, dit.latent_channels, dit.latent_size, dit.latent_size, device=cfg.device)
    times = []
    with torch.inference_mode():
        for i in range(cfg.warmup_frames + cfg.timed_frames):
            start = time.perf_counter()
            core.autoencoder.decode(latents).cpu()
            if i >= cfg.warmup_frames:
                times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _sdpa_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# CPU fused attention kernels the FlopCounterMode registry does not know (it knows the CUDA ones).
SDPA_CPU_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
                  torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward}


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=SDPA_CPU_FLOPS)


def frame_flops(core: DreamCore, rng: np.random.Generator) -> dict[str, float]:
    """FLOPs per frame of one batched step (its count ÷ batch): the DiT forwards and, the rest, decoding.
    Counted on an eager step (a CUDA graph replay or compiled code dispatches no operator the counter could see)."""
    with core.eager(), flop_counter() as counter:
        core.step(rng.integers(core.n_actions, size=core.num_envs))
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    dit, total = float(per_module.get(DIT_MODULE, 0)), float(counter.get_total_flops())
    return {"dit": dit / core.num_envs, "decode": (total - dit) / core.num_envs, "total": total / core.num_envs}


def horizon_drift(path: Path, cfg: BenchConfig, rng: np.random.Generator) -> dict[str, float]:
    """Batch-1 frame time and memory at frame `horizon` against frame `horizon_early` (same env, one episode)."""
    core = primed_core(path, 1, cfg.env_denoise_steps, cfg)
    times, memory = [], {}
    for frame in range(1, cfg.horizon + 1):
        times.extend(step_ms(core, 1, rng))
        if frame in (cfg.horizon_early, cfg.horizon):
            memory[frame] = memory_in_use_mb(cfg.device)
    early = float(np.median(times[cfg.horizon_early - cfg.horizon_window:cfg.horizon_early]))
    late = float(np.median(times[-cfg.horizon_window:]))
    return {"early_frame": cfg.horizon_early, "late_frame": cfg.horizon, "early_ms": early, "late_ms": late,
            "time_ratio": late / early, "early_memory_mb": memory[cfg.horizon_early],
            "late_memory_mb": memory[cfg.horizon], "memory_ratio": memory[cfg.horizon] / memory[cfg.horizon_early]}


def vector_fps(path: Path, num_envs: int, cfg: BenchConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Frames/s of WorldModelVectorEnv with `num_envs` envs (env_denoise_steps, random actions, cfg.dtype) and the
    DiT dtype it ran."""
    env = WorldModelVectorEnv(num_envs, path, cfg.env_denoise_steps, device=cfg.device, dtype=cfg.dtype,
                              cuda_graph=cfg.cuda_graph, compile=cfg.compile)
    env.reset(seed=cfg.seed)
    for _ in range(cfg.warmup_frames):
        env.step(rng.integers(env.single_action_space.n, size=num_envs))
    start = time.perf_counter()
    for _ in range(cfg.vector_frames):
        env.step(rng.integers(env.single_action_space.n, size=num_envs))
    sync(cfg.device)
    fps = num_envs * cfg.vector_frames / (time.perf_counter() - start)
    dtype = str(env.core.dtype).removeprefix("torch.")
    env.close()
    return {"fps": fps, "dtype": dtype}


def dtype_speed(path: Path, cfg: BenchConfig, rng: np.random.Generator) -> dict[int, dict[str, Any]]:
    """Per batch size of cfg.dtype_batches: ms/frame (env_denoise_steps) in float32 and bfloat16, and what "auto"
    picks."""
    out = {}
    for batch in cfg.dtype_batches:
        cores = {name: primed_core(path, batch, cfg.env_denoise_steps, cfg, name) for name in ("float32", "bfloat16")}
        out[batch] = {name: timed_point(core, cfg, rng) / batch for name, core in cores.items()}
        out[batch]["auto"] = pick_dtype("auto", torch.device(cfg.device), batch)
    return out


def model_speed(cfg: BenchConfig, path: Path, matmul_flops: float) -> dict[str, Any]:
    """Every figure of section b, measured now on cfg.device (cfg.batch_sizes includes 1)."""
    rng = np.random.default_rng(cfg.seed)
    frame_ms: dict[int, dict[int, float]] = {}       # batch -> denoise steps -> ms per frame
    step_cost: dict[int, float] = {}                 # batch -> marginal ms per denoising step per frame
    flops: dict[int, dict[str, float]] = {}          # denoise steps -> FLOPs per frame (batch 1)
    for batch in cfg.batch_sizes:
        core = primed_core(path, batch, cfg.denoise_steps[0], cfg)
        frame_ms[batch] = {}
        for steps in cfg.denoise_steps:
            core.denoise_steps = steps
            frame_ms[batch][steps] = timed_point(core, cfg, rng) / batch
            if batch == 1:
                flops[steps] = frame_flops(core, rng)
        if len(cfg.denoise_steps) > 1:
            step_cost[batch] = float(np.polyfit(cfg.denoise_steps, list(frame_ms[batch].values()), 1)[0])
        if batch == 1:
            decode = decode_ms(core, 1, cfg)
            params_m = (core.dit.num_params() / 1e6, sum(p.numel() for p in core.autoencoder.parameters()) / 1e6)
            decoder = core.autoencoder.config.decoder
    single = frame_ms[1]
    latency = {s: {"total_ms": single[s], "decode_ms": decode, "dream_ms": single[s] - decode}
               for s in cfg.denoise_steps}
    flop_bound = {}
    for steps, count in flops.items():
        limit_ms, dit_limit_ms = count["total"] / matmul_flops * 1e3, count["dit"] / matmul_flops * 1e3
        flop_bound[steps] = {"flops_dit": count["dit"], "flops_decode": count["decode"], "flops_total": count["total"],
                             "limit_ms": limit_ms, "ratio": single[steps] / limit_ms, "dit_limit_ms": dit_limit_ms,
                             "dit_ratio": (single[steps] - decode) / dit_limit_ms, "mfu": limit_ms / single[steps]}
    name = cfg.checkpoint or (f"untrained `{cfg.untrained_size}` DiT of `{cfg.env_id or BUNDLED_ENV_ID}`, "
                              f"autoencoder widths {list(cfg.untrained_widths)}")
    return {"checkpoint": name, "dit_params_m": params_m[0], "autoencoder_params_m": params_m[1], "decoder": decoder,
            "matmul_gflops": matmul_flops / 1e9, "ms_per_frame": frame_ms, "ms_per_denoise_step": step_cost,
            "latency": latency, "flop_bound": flop_bound, "horizon": horizon_drift(path, cfg, rng),
            "vector_fps": {n: vector_fps(path, n, cfg, rng) for n in cfg.vector_sizes},
            "dtypes": dtype_speed(path, cfg, rng), "dtype": cfg.dtype}


def model_markdown(fig: dict[str, Any]) -> list[str]:
    steps = list(fig["latency"])
    lines = [f"Model: {fig['checkpoint']}; DiT {fig['dit_params_m']:.2f} M, "
             f"autoencoder {fig['autoencoder_params_m']:.2f} M "
             f"parameters ({fig['decoder']} decoder). "
             f"Measured matmul throughput {fig['matmul_gflops']:.1f} GFLOP/s (fp32). "
             "ms/frame = one batched DreamCore step (denoise + cache write + decode) ÷ batch, median; "
             "ms per denoising step = slope of "
             "ms/frame over the step counts.", "",
             "| batch | " + " | ".join(f"{s} step(s) ms/frame" for s in steps) + " | ms per denoising step |",
             "|---" * (len(steps) + 2) + "|"]
    for batch, row in fig["ms_per_frame"].items():
        slope = fig["ms_per_denoise_step"].get(batch)
        lines.append(f"| {batch} | " + " | ".join(f"{row[s]:.2f}" for s in steps)
                     + f" | {'' if slope is None else f'{slope:.2f}'} |")
    lines += ["", "Keypress→frame latency at batch 1 = dreaming (denoise + cache write) + decoding:", "",
              "| denoise steps | dream ms | decode ms | latency ms | frames/s |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {v['dream_ms']:.2f} | {v['decode_ms']:.2f} | {v['total_ms']:.2f} | {1e3 / v['total_ms']:.1f} |"
              for s, v in fig["latency"].items()]
    lines += ["", "FLOP-bound limit = FLOPs per frame (counted by torch FlopCounterMode on one batch-1 step) ÷ "
              "measured matmul throughput; MFU = its inverse ratio:", "",
              "| denoise steps | MFLOPs DiT | MFLOPs decode | limit ms | frame ÷ limit | DiT time ÷ DiT limit | MFU |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {s} | {v['flops_dit'] / 1e6:.1f} | {v['flops_decode'] / 1e6:.1f} | {v['limit_ms']:.3f} | "
              f"{v['ratio']:.1f} | {v['dit_ratio']:.1f} | {v['mfu']:.1%} |" for s, v in fig["flop_bound"].items()]
    h = fig["horizon"]
    lines += ["", f"Long horizon (batch 1, one episode): frame {h['late_frame']:,} takes {h['late_ms']:.2f} ms vs "
              f"{h['early_ms']:.2f} ms at frame {h['early_frame']:,} — "
              f"ratio **{h['time_ratio']:.3f}** (goal ≤ {HORIZON_GOAL}); "
              f"memory {h['late_memory_mb']:.1f} MB vs {h['early_memory_mb']:.1f} MB — "
              f"ratio **{h['memory_ratio']:.3f}**.",
              "", f"WorldModelVectorEnv, dtype={fig['dtype']!r}:", "",
              "| VectorEnv N | DiT dtype | frames/s |", "|---|---|---|"]
    lines += [f"| {n} | {v['dtype']} | {v['fps']:.1f} |" for n, v in fig["vector_fps"].items()]
    lines += ["", "DiT dtype per batch size (ms/frame, whole env step; the decoder stays float32); `auto` is the env "
              "default (`envs.dream.pick_dtype`):", "",
              "| batch | float32 ms/frame | bfloat16 ms/frame | bfloat16 ÷ float32 | auto picks |",
              "|---|---|---|---|---|"]
    lines += [f"| {b} | {v['float32']:.2f} | {v['bfloat16']:.2f} | {v['bfloat16'] / v['float32']:.3f} | {v['auto']} |"
              for b, v in fig["dtypes"].items()]
    return lines
