"""Stage 0: record a real game into a Minari dataset, the training data of every later stage.

Plays `episodes` episodes of any Gymnasium env with RGB frames and Discrete actions under a
scripted policy (envs.policies) and writes them, frames resized to `resize_to`, with
envs.recording.RecordMinari: lossless, crash safe (nothing appears under the dataset id unless the
run finishes), an existing id refused unless `overwrite=true`.

    python -m train.stages.record episodes=200 policy=random dataset_id=coinchase/random-v0
    python -m train.stages.record policy=seeker epsilon=0.2 dataset_id=coinchase/seeker-v0
    python -m train.stages.record env_id=ALE/Pong-v5 dataset_id=pong/random-v0   # needs dreamgym[atari]
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs.policies import make_policy
from envs.recording import RecordMinari, check_recordable, make_env
from train.common.cli import hydra_main


@dataclass
class RecordConfig:
    env_id: str = "dreamgym/CoinChase-v0"     # any Gymnasium id with uint8 RGB frames and Discrete actions
    episodes: int = 100                       # episodes to record
    policy: str = "random"                    # random | seeker | mixed (the last two CoinChase only)
    epsilon: float = 0.1                      # seeker: chance of a random (legal) move per step
    min_repeat: int = 1                       # random: each action is held for a uniform number
    max_repeat: int = 8                       #   of steps in [min_repeat, max_repeat]
    seed: int = 0                             # seeds every episode's env reset and policy
    dataset_id: str = "coinchase/random-v0"   # Minari id, (namespace/)name-v<version>
    root: str = "data/minari"                 # datasets root; the dataset goes to <root>/<dataset_id>
    overwrite: bool = False                   # replace an existing dataset (built aside, then swapped in)
    resize_to: int = 64                       # stored frames are resize_to x resize_to (cv2 INTER_AREA)
    max_episode_steps: int | None = None      # time limit per episode (None: the env's own)
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)   # passed to gymnasium.make, e.g.
                                              #   +env_kwargs.lethal=false (CoinChase goes on after a catch)
    progress: bool = True                     # show a tqdm bar


def episode_seed(seed: int, episode: int) -> int:
    """Independent, reproducible env seed of one episode (recorded in the dataset)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def record(cfg: RecordConfig) -> Path:
    """Record `cfg.episodes` episodes; returns the dataset path <root>/<dataset_id>."""
    if cfg.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {cfg.episodes}")
    kwargs = dict(cfg.env_kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    env = make_env(cfg.env_id, **kwargs)
    try:
        check_recordable(env)
        policy = make_policy(cfg.policy, int(env.action_space.n), np.random.default_rng(cfg.seed), epsilon=cfg.epsilon,
                             min_repeat=cfg.min_repeat, max_repeat=cfg.max_repeat)
        recorder = RecordMinari(env, cfg.dataset_id, cfg.root, overwrite=cfg.overwrite, resize_to=cfg.resize_to,
                                algorithm_name=f"dreamgym/{cfg.policy}", metadata={"record": dataclasses.asdict(cfg)})
    except BaseException:
        env.close()
        raise
    try:
        start = time.perf_counter()
        bar = tqdm(range(cfg.episodes), unit="ep", desc=f"record {cfg.dataset_id}", disable=not cfg.progress)
        for episode in bar:
            obs, info = recorder.reset(seed=episode_seed(cfg.seed, episode))
            policy.reset(np.random.default_rng([cfg.seed, episode]))
            done = False
            while not done:
                obs, _, terminated, truncated, info = recorder.step(policy(obs, info))
                done = terminated or truncated
            bar.set_postfix(steps=recorder.total_steps, steps_per_s=f"{recorder.total_steps / (time.perf_counter() - start):.0f}")
    except BaseException:
        recorder.abort()   # an interrupted run leaves no dataset
        recorder.close()
        raise
    path = recorder.finalize()
    recorder.close()
    assert path is not None, "at least one step was recorded"
    return path


def main(cfg: RecordConfig) -> None:
    path = record(cfg)
    print(f"recorded {cfg.episodes} episodes of {cfg.env_id} with the {cfg.policy} policy -> {path}")


if __name__ == "__main__":
    hydra_main("record", RecordConfig, main)
