"""The speed benchmark: every figure measured in one run on one machine, ratios first.

Sections (each can be switched off): a. the real game (steps/s, recording steps/s); b. the world
model through the env's own core (ms per frame and per denoising step at batch 1 and 16,
keypress→frame latency, frame time ÷ FLOP-bound limit, frame 10,000 ÷ frame 100 in time and
memory, VectorEnv frames/s) — train/bench_model.py; c. a peer world model (DIAMOND) timed as a
subprocess on the same machine and thread count; d. training iterations/s of every stage on
synthetic latents, Self Forcing ÷ teacher forcing — train/bench_train.py. Absolute figures carry
the device they were measured on. Prints the markdown report and writes it with a JSON twin.

    python -m train.bench                                # full run, CPU, runs/bench/bench.{md,json}
    python -m train.bench quick=true                     # every loop shrunk, tiny models: < 60 s (tests)
    DIAMOND_SRC=/work/diamond python -m train.bench      # with the peer
    python -m train.bench device=cuda training=false     # on a GPU, absolute figures and MFU
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.coinchase import CoinChaseEnv
from envs.recording import RecordMinari
from train.bench_common import BenchConfig, device_label, effective, matmul_flops_per_s
from train.bench_model import HORIZON_GOAL, model_checkpoint, model_markdown, model_speed, primed_core, timed_point
from train.bench_train import training_markdown, training_speed
from train.cli import hydra_main

REPO = Path(__file__).resolve().parents[1]
GAME_STEPS_GOAL = 5_000       # CoinChase steps/s a learnable-on-CPU game must reach (DESIGN: thousands/s)
PEER_BATCHES = (1, 16)        # the batch sizes the peer script times


# ------------------------------------------------------------------ a. the game
def game_speed(cfg: BenchConfig) -> dict[str, float]:
    """CoinChase steps/s single-threaded under random actions, bare and recording through RecordMinari."""
    def play(env, steps: int) -> float:
        rng = np.random.default_rng(cfg.seed)
        actions = rng.integers(env.action_space.n, size=steps)
        env.reset(seed=cfg.seed)
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(int(action))
            if terminated or truncated:
                env.reset()
        return time.perf_counter() - start

    bare = cfg.game_steps / play(CoinChaseEnv(), cfg.game_steps)
    with tempfile.TemporaryDirectory(prefix="dreamgym-bench-record-") as root:
        recorder = RecordMinari(CoinChaseEnv(), "bench/coinchase-v0", root)
        seconds = play(recorder, cfg.record_steps)
        start = time.perf_counter()
        recorder.close()                   # writes the last episode and moves the dataset into place
        with_writing = cfg.record_steps / (seconds + time.perf_counter() - start)
    return {"steps_per_s": bare, "record_steps_per_s": with_writing, "record_over_bare": with_writing / bare,
            "steps": cfg.game_steps, "record_steps": cfg.record_steps, "goal_steps_per_s": GAME_STEPS_GOAL}


def game_markdown(fig: dict[str, float]) -> list[str]:
    met = "met" if fig["steps_per_s"] >= fig["goal_steps_per_s"] else "NOT met"
    return ["| figure | value |", "|---|---|",
            f"| CoinChase steps/s (one thread, random actions, {fig['steps']} steps) | {fig['steps_per_s']:,.0f} "
            f"(goal ≥ {fig['goal_steps_per_s']:,}: {met}) |",
            f"| recording steps/s through RecordMinari ({fig['record_steps']} steps, incl. writing) | "
            f"{fig['record_steps_per_s']:,.0f} |",
            f"| recording ÷ bare | {fig['record_over_bare']:.2f} |"]


# ------------------------------------------------------------------ c. the peer
def peer_speed(cfg: BenchConfig, ours: Callable[[], dict[int, float]]) -> dict[str, Any]:
    """Run the DIAMOND timing script (env DIAMOND_SRC) now, and put our ms/frame beside it as ratios.

    ours: gives our ms per frame at the PEER_BATCHES with cfg.peer_steps denoising steps (called if the peer ran)."""
    if not os.environ.get("DIAMOND_SRC"):
        return {"skipped": "environment variable DIAMOND_SRC is not set (a checkout of eloialonso/diamond)"}
    script = (REPO / cfg.peer_script).resolve()
    if not script.is_file():
        return {"skipped": f"peer script {script} not found"}
    done = subprocess.run([sys.executable, str(script), "--threads", str(cfg.threads), "--steps", str(cfg.peer_steps)],
                          capture_output=True, text=True, timeout=cfg.peer_timeout_s, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"skipped": f"peer script failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"}
    peer = json.loads(lines[-1])
    ours_ms = ours()
    ratios = {b: ours_ms[b] / peer[f"ms_per_frame_b{b}"] for b in ours_ms if f"ms_per_frame_b{b}" in peer}
    return {"peer": peer, "ours_ms_per_frame": ours_ms, "ours_over_peer": ratios}


def peer_markdown(fig: dict[str, Any]) -> list[str]:
    if "skipped" in fig:
        return [f"Skipped: {fig['skipped']}."]
    peer = fig["peer"]
    lines = [f"Peer: {peer['peer']} ({peer['params_m']:.1f} M parameters, {peer['steps']} denoising steps, "
             f"{peer['threads']} thread(s)), run as a subprocess in this run. Ours: the same step count and thread "
             "count, a whole env frame (denoise + cache write + decode).", "",
             "| batch | ours ms/frame | peer ms/frame | ours ÷ peer |", "|---|---|---|---|"]
    lines += [f"| {b} | {fig['ours_ms_per_frame'][b]:.2f} | {peer[f'ms_per_frame_b{b}']:.2f} | **{r:.2f}** |"
              for b, r in fig["ours_over_peer"].items()]
    return lines


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
            rows.append((f"frame time ÷ FLOP-bound limit (batch 1, denoising steps = {steps})", m["flop_bound"][steps]["ratio"]))
        h = m["horizon"]
        rows.append((f"frame time at frame {h['late_frame']:,} ÷ frame {h['early_frame']:,} (goal ≤ {HORIZON_GOAL})",
                     h["time_ratio"]))
        rows.append((f"memory at frame {h['late_frame']:,} ÷ frame {h['early_frame']:,}", h["memory_ratio"]))
        if steps in m["ms_per_frame"][1]:
            single = 1e3 / m["ms_per_frame"][1][steps]
            for n, fps in m["vector_fps"].items():
                rows.append((f"VectorEnv N={n} frames/s ÷ batch-1 frames/s (denoising steps = {steps})", fps / single))
    if "peer" in fig and "ours_over_peer" in fig["peer"]:
        for b, r in fig["peer"]["ours_over_peer"].items():
            rows.append((f"our ms/frame ÷ DIAMOND's (batch {b})", r))
    if "training" in fig and "sf_over_tf" in fig["training"]:
        for reuse, ratio in fig["training"]["sf_over_tf"].items():
            rows.append((f"Self Forcing iteration ÷ teacher-forcing iteration (critic_reuse={reuse})", ratio))
        rows.append(("Self Forcing peak memory ÷ teacher forcing", fig["training"]["sf_memory_over_tf"]))
    return ["| ratio | value |", "|---|---|"] + [f"| {name} | **{value:.3f}** |" for name, value in rows]


def report(fig: dict[str, Any]) -> str:
    lines = ["# dreamgym speed benchmark", "",
             f"Device: **{fig['device']}**. Mode: {'quick (shrunk loops, tiny models)' if fig['quick'] else 'full'}. "
             f"Measured {fig['date']} in {fig['seconds']:.0f} s; every figure comes from this one run.", "",
             "## Ratios", "", *headline(fig)]
    sections = (("game", "a. Game", game_markdown), ("model", "b. Model", model_markdown),
                ("peer", "c. Peer", peer_markdown), ("training", "d. Training speed", training_markdown))
    for key, title, render in sections:
        if key in fig:
            lines += ["", f"## {title} ({fig['device']})", "", *render(fig[key])]
    return "\n".join(lines) + "\n"


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Measure every enabled section with cfg.threads torch threads; returns the figures (what the JSON file holds)."""
    cfg = effective(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: BenchConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    fig: dict[str, Any] = {"device": device_label(cfg), "quick": cfg.quick, "config": dataclasses.asdict(cfg),
                           "date": time.strftime("%Y-%m-%d %H:%M")}
    matmul = matmul_flops_per_s(cfg) if cfg.model or cfg.training else math.nan
    if cfg.game:
        fig["game"] = game_speed(cfg)
    with tempfile.TemporaryDirectory(prefix="dreamgym-bench-model-") as tmp:
        path = model_checkpoint(cfg, Path(tmp)) if cfg.model or cfg.peer else None
        if cfg.model:
            fig["model"] = model_speed(cfg, path, matmul)
        if cfg.peer:
            fig["peer"] = peer_speed(cfg, lambda: ours_at_peer_steps(cfg, path, fig.get("model")))
    if cfg.training:
        fig["training"] = training_speed(cfg, matmul)
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


if __name__ == "__main__":
    hydra_main("bench", BenchConfig, main)
