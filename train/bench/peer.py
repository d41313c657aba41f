"""Section c of the benchmark: a peer world model (DIAMOND) timed beside ours on the same machine.

Runs the peer's timing script (`peer_script`, needs env DIAMOND_SRC, a checkout of eloialonso/diamond)
as a subprocess with the same thread and denoising-step counts, and puts our ms/frame beside it as ratios.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from envs.dream import pick_dtype
from train.bench.common import BenchConfig

REPO = Path(__file__).resolve().parents[2]
PEER_BATCHES = (1, 16)        # the batch sizes the peer script times


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
        return {"skipped": f"peer script failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-300:]}"}
    peer = json.loads(lines[-1])
    ours_ms = ours()
    ratios = {b: ours_ms[b] / peer[f"ms_per_frame_b{b}"] for b in ours_ms if f"ms_per_frame_b{b}" in peer}
    dtypes = {b: pick_dtype(cfg.dtype, torch.device(cfg.device), b) for b in ours_ms}    # our DiT's, per batch
    return {"peer": peer, "ours_ms_per_frame": ours_ms, "ours_over_peer": ratios, "ours_dtype": dtypes}


def peer_markdown(fig: dict[str, Any]) -> list[str]:
    if "skipped" in fig:
        return [f"Skipped: {fig['skipped']}."]
    peer = fig["peer"]
    lines = [f"Peer: {peer['peer']} ({peer['params_m']:.1f} M parameters, {peer['steps']} denoising steps, "
             f"{peer['threads']} thread(s)), run as a subprocess in this run. Ours: the same step count and thread "
             "count, a whole env frame (denoise + cache write + decode), in the env's DiT dtype for that batch.", "",
             "| batch | ours ms/frame | our DiT dtype | peer ms/frame | ours ÷ peer |", "|---|---|---|---|---|"]
    dtypes = fig.get("ours_dtype", {})
    lines += [f"| {b} | {fig['ours_ms_per_frame'][b]:.2f} | {dtypes.get(b, '–')} | {peer[f'ms_per_frame_b{b}']:.2f} "
              f"| **{r:.2f}** |" for b, r in fig["ours_over_peer"].items()]
    return lines
