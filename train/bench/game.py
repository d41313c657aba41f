"""Section a of the benchmark: how fast the real game steps, bare and while it is recorded.

The game is the benchmarked checkpoint's own (its config's env_id), or `env_id` when given, or the bundled game:
steps/s on one thread under random actions, made as every recording makes it (envs.recording.make_env), and the
same through envs.recording.RecordMinari including writing the dataset, against the goal a game must reach to be
learnable on a CPU.
"""
from __future__ import annotations

import re
import tempfile
import time

import numpy as np

from envs.recording import RecordMinari, make_env
from train.bench.common import BenchConfig
from train.common.plugins import game_name
from train.common.untrained import BUNDLED_ENV_ID
from worldmodel.checkpoint import read_config

GAME_STEPS_GOAL = 5_000       # steps/s a learnable-on-CPU game must reach (thousands per second)


def game_env_id(cfg: BenchConfig) -> str:
    """The real game section a times: cfg.env_id, else the checkpoint's, else the bundled game."""
    if cfg.env_id:
        return cfg.env_id
    if cfg.checkpoint is None:
        return BUNDLED_ENV_ID
    env_id = read_config(cfg.checkpoint)[0].env_id
    if not env_id:
        raise ValueError(f"checkpoint {cfg.checkpoint} names no env_id: set env_id=<its game> or game=false")
    return env_id


def game_speed(cfg: BenchConfig) -> dict[str, float | str]:
    """The game's steps/s single-threaded under random actions, bare and recording through RecordMinari."""
    env_id = game_env_id(cfg)

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

    env = make_env(env_id)
    try:
        bare = cfg.game_steps / play(env, cfg.game_steps)
    finally:
        env.close()
    with tempfile.TemporaryDirectory(prefix="dreamgym-bench-record-") as root:
        recorder = RecordMinari(make_env(env_id), f"bench/{game_name(env_id)}-v0", root)
        seconds = play(recorder, cfg.record_steps)
        start = time.perf_counter()
        recorder.close()                   # writes the last episode and moves the dataset into place
        with_writing = cfg.record_steps / (seconds + time.perf_counter() - start)
    return {"env_id": env_id, "steps_per_s": bare, "record_steps_per_s": with_writing,
            "record_over_bare": with_writing / bare, "steps": cfg.game_steps, "record_steps": cfg.record_steps,
            "goal_steps_per_s": GAME_STEPS_GOAL}


def game_markdown(fig: dict[str, float | str]) -> list[str]:
    met = "met" if fig["steps_per_s"] >= fig["goal_steps_per_s"] else "NOT met"
    env_id = str(fig.get("env_id", BUNDLED_ENV_ID))
    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    return ["| figure | value |", "|---|---|",
            f"| {name} steps/s (`{env_id}`, one thread, random actions, {fig['steps']} steps) | "
            f"{fig['steps_per_s']:,.0f} (goal ≥ {fig['goal_steps_per_s']:,}: {met}) |",
            f"| recording steps/s through RecordMinari ({fig['record_steps']} steps, incl. writing) | "
            f"{fig['record_steps_per_s']:,.0f} |",
            f"| recording ÷ bare | {fig['record_over_bare']:.2f} |"]
