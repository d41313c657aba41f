"""Section f of the benchmark: where a batched dream step's time goes, per operator.

Owns `step_profile`: torch.profiler over `profile_frames` DreamCore steps at each of
`profile_batches`, after a warm-up. Per batch size it reports the step's wall ms, the operators
(kernels on CUDA) launched per step, and the top `profile_top` operators by self time (device time
on CUDA, host time on CPU) with their share of the total, so that the largest items are fixed first,
not guessed at.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from train.bench.common import BenchConfig, sync
from train.bench.model import primed_core, step_ms


def _self_time_us(event: Any, cuda: bool) -> float:
    """Host self time of an operator on CPU; on CUDA, the device time of device-side events only (kernels,
    copies, memsets: the host operators that launched them would count the same time twice)."""
    if not cuda:
        return float(event.self_cpu_time_total)
    if event.device_type != torch.autograd.DeviceType.CUDA:
        return 0.0
    return float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))


def step_profile(path: Path, cfg: BenchConfig) -> dict[int, dict[str, Any]]:
    """Per batch size: {"step_ms", "ops_per_step", "total_ms_per_step", "top": [(name, calls/step, ms/step, share)]}."""
    cuda = torch.device(cfg.device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    rng = np.random.default_rng(cfg.seed)
    out: dict[int, dict[str, Any]] = {}
    for batch in cfg.profile_batches:
        core = primed_core(path, batch, cfg.env_denoise_steps, cfg)
        step_ms(core, cfg.warmup_frames, rng)
        sync(cfg.device)
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            step_ms(core, cfg.profile_frames, rng)
            sync(cfg.device)
        wall = (time.perf_counter() - start) * 1e3 / cfg.profile_frames
        rows = [(e.key, e.count, _self_time_us(e, cuda)) for e in prof.key_averages()]
        rows = [r for r in rows if r[2] > 0]
        total = sum(r[2] for r in rows)
        rows.sort(key=lambda r: -r[2])
        n = cfg.profile_frames
        out[batch] = {"step_ms": wall, "ops_per_step": sum(r[1] for r in rows) / n,
                      "total_ms_per_step": total / n / 1e3,
                      "top": [(name, calls / n, t / n / 1e3, t / total) for name, calls, t in rows[:cfg.profile_top]]}
    return out


def profile_markdown(fig: dict[int, dict[str, Any]], cuda: bool) -> list[str]:
    kind = "device (kernel) time" if cuda else "host self time"
    lines = [f"torch.profiler over the env's DreamCore step; top operators by {kind} per step. "
             "'ops per step' counts the operators with self time (on CUDA: kernels and copies launched).", ""]
    for batch, f in fig.items():
        lines += [f"**N = {batch}**: step {f['step_ms']:.2f} ms wall (profiled), {f['total_ms_per_step']:.2f} ms of "
                  f"{kind}, {f['ops_per_step']:.0f} ops per step.", "",
                  "| operator | calls/step | ms/step | share |", "|---|---|---|---|"]
        lines += [f"| `{name[:60]}` | {calls:.0f} | {ms:.3f} | {share:.1%} |" for name, calls, ms, share in f["top"]]
        lines.append("")
    return lines
