"""Section a of the benchmark: how fast the real game steps, bare and while it is recorded.

CoinChase steps/s on one thread under random actions, and the same through envs.recording.RecordMinari
including writing the dataset, against the goal a game must reach to be learnable on a CPU.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np

from envs.coinchase import CoinChaseEnv
from envs.recording import RecordMinari
from train.bench.common import BenchConfig

GAME_STEPS_GOAL = 5_000       # CoinChase steps/s a learnable-on-CPU game must reach (thousands per second)


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
