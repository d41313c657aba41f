"""`python -m train.bench`: every speed figure measured in one run on one machine, ratios first.

Sections (each can be switched off), one module each: a. the real game (steps/s, recording steps/s)
— game.py; b. the world model through the env's own core (ms per frame and per denoising step at
batch 1 and 16, keypress→frame latency, frame time ÷ FLOP-bound limit, frame 10,000 ÷ frame 100 in
time and memory, VectorEnv frames/s) — model.py; c. a peer world model (DIAMOND) timed as a
subprocess on the same machine and thread count — peer.py; d. training iterations/s of every stage
on synthetic latents, Self Forcing ÷ teacher forcing — training.py; e. the Triton kernels against the
PyTorch path (on CUDA; elsewhere the report says why not) — kernels.py; f. a per-operator profile of
the env step at N = 1, 16, 64 — profile.py. Absolute figures carry the
device they were measured on. This module runs them and prints the markdown report (ratios first)
and writes it with a JSON twin.

    python -m train.bench                                # full run, CPU, runs/bench/bench.{md,json}
    python -m train.bench quick=true                     # every loop shrunk, tiny models: < 60 s (tests)
    DIAMOND_SRC=/work/diamond python -m train.bench      # with the peer
    python -m train.bench device=cuda training=false     # on a GPU, absolute figures and MFU
    python -m train.bench checkpoint=DIR training=false  # any game's checkpoint; section a times its real game
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.bench.common import BenchConfig, device_label, effective, matmul_flops_per_s
from train.bench.game import game_markdown, game_speed
from train.bench.kernels import kernel_speed
from train.bench.model import HORIZON_GOAL, model_checkpoint, model_markdown, model_speed, primed_core, timed_point
from train.bench.profile import profile_markdown, step_profile
from train.bench.peer import PEER_BATCHES, peer_markdown, peer_speed
from train.bench.training import training_markdown, training_speed
from worldmodel import kernels


# ------------------------------------------------------------------ the report
def headline(fig: dict[str, Any]) -> list[str]:
    """The ratios: machine-independent, so they lead the report."""
    rows = []
    if "game" in fig:
        rows.append(("recording steps/s ÷ bare game steps/s", fig["game"]["record_over_bare"]))
    if "model" in fig:
        m = fig["model"]
        steps = fig["config"]["env_denoise_steps"]
        if steps in m["flop_bound"]:
            rows.append((f"frame time ÷ FLOP-bound limit (batch 1, denoising steps = {steps})",
                         m["flop_bound"][steps]["ratio"]))
        h = m["horizon"]
        rows.append((f"frame time at frame {h['late_frame']:,} ÷ frame {h['early_frame']:,} (goal ≤ {HORIZON_GOAL})",
                     h["time_ratio"]))
        rows.append((f"memory at frame {h['late_frame']:,} ÷ frame {h['early_frame']:,}", h["memory_ratio"]))
        if steps in m["ms_per_frame"][1]:
            single = 1e3 / m["ms_per_frame"][1][steps]
            for n, v in m["vector_fps"].items():
                rows.append((f"VectorEnv N={n} frames/s ({v['dtype']}) ÷ batch-1 frames/s (denoising steps = {steps})",
                             v["fps"] / single))
        for b, v in m["dtypes"].items():
            rows.append((f"bfloat16 ms/frame ÷ float32 (batch {b})", v["bfloat16"] / v["float32"]))
    if "peer" in fig and "ours_over_peer" in fig["peer"]:
        for b, r in fig["peer"]["ours_over_peer"].items():
            rows.append((f"our ms/frame ÷ DIAMOND's (batch {b})", r))
    if "training" in fig and "sf_over_tf" in fig["training"]:
        for reuse, ratio in fig["training"]["sf_over_tf"].items():
            rows.append((f"Self Forcing iteration ÷ teacher-forcing iteration (critic_reuse={reuse})", ratio))
        rows.append(("Self Forcing peak memory ÷ teacher forcing", fig["training"]["sf_memory_over_tf"]))
    return ["| ratio | value |", "|---|---|"] + [f"| {name} | **{value:.3f}** |" for name, value in rows]


def kernels_markdown(section: dict[str, Any]) -> list[str]:
    if not section["figures"]:
        return [f"Not measured: {section['reason']}."]
    return ["| figure | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in section["figures"].items()]


def report(fig: dict[str, Any]) -> str:
    cfg = fig["config"]
    lines = ["# dreamgym speed benchmark", "",
             f"Device: **{fig['device']}**. Mode: {'quick (shrunk loops, tiny models)' if fig['quick'] else 'full'}. "
             f"Measured {fig['date']} in {fig['seconds']:.0f} s; every figure comes from this one run.", "",
             f"Step path: cuda_graph={cfg['cuda_graph']}, compile={cfg['compile']}, fp32 matmul precision "
             f"{cfg.get('matmul_precision', 'highest')!r}, "
             f"Triton kernels {'on' if fig.get('triton_kernels') else 'off'}.", "",
             "## Ratios", "", *headline(fig)]
    sections = (("game", "a. Game", game_markdown), ("model", "b. Model", model_markdown),
                ("peer", "c. Peer", peer_markdown), ("training", "d. Training speed", training_markdown),
                ("kernels", "e. Triton kernels", kernels_markdown),
                ("profile", "f. Where a step's time goes",
                 lambda f: profile_markdown(f, fig["device"].startswith("cuda"))))
    for key, title, render in sections:
        if key in fig:
            lines += ["", f"## {title} ({fig['device']})", "", *render(fig[key])]
    return "\n".join(lines) + "\n"


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Measure every enabled section with cfg.threads torch threads; returns the figures (what the JSON file holds)."""
    cfg = effective(cfg)
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    torch.set_num_threads(cfg.threads)
    torch.set_float32_matmul_precision(cfg.matmul_precision)     # validates the name
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)


def _run(cfg: BenchConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    fig: dict[str, Any] = {"device": device_label(cfg), "quick": cfg.quick, "config": dataclasses.asdict(cfg),
                           "date": time.strftime("%Y-%m-%d %H:%M"), "triton_kernels": kernels.enabled()}
    matmul = matmul_flops_per_s(cfg) if cfg.model or cfg.training else math.nan
    if cfg.game:
        fig["game"] = game_speed(cfg)
    with tempfile.TemporaryDirectory(prefix="dreamgym-bench-model-") as tmp:
        path = model_checkpoint(cfg, Path(tmp)) if cfg.model or cfg.peer or cfg.profile else None
        if cfg.model:
            fig["model"] = model_speed(cfg, path, matmul)
        if cfg.profile:
            fig["profile"] = step_profile(path, cfg)
        if cfg.peer:
            fig["peer"] = peer_speed(cfg, lambda: ours_at_peer_steps(cfg, path, fig.get("model")))
    if cfg.training:
        fig["training"] = training_speed(cfg, matmul)
    if cfg.kernels:
        figures, reason = kernel_speed(size="tiny" if cfg.quick else "small", device=cfg.device,
                                       repeats=3 if cfg.quick else 50, warmup=1 if cfg.quick else 5)
        fig["kernels"] = {"figures": figures, "reason": reason}
    fig["seconds"] = time.perf_counter() - start
    return fig


def ours_at_peer_steps(cfg: BenchConfig, path: Path, model: dict[str, Any] | None) -> dict[int, float]:
    """Our ms/frame at the PEER_BATCHES with the peer's step count: from section b, or timed now."""
    ours = {}
    for batch in PEER_BATCHES:
        if model is not None and cfg.peer_steps in model["ms_per_frame"].get(batch, {}):
            ours[batch] = model["ms_per_frame"][batch][cfg.peer_steps]
        else:
            core = primed_core(path, batch, cfg.peer_steps, cfg)
            ours[batch] = timed_point(core, cfg, np.random.default_rng(cfg.seed)) / batch
    return ours


def main(cfg: BenchConfig) -> dict[str, Any]:
    fig = run(cfg)
    text = report(fig)
    print(text)
    for path, content in ((cfg.markdown_path, text), (cfg.json_path, json.dumps(fig, indent=2, default=float))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    print(f"wrote {cfg.markdown_path} and {cfg.json_path}")
    return fig

