"""PPO on CoinChase, trained in the real game or inside the dream, always judged in the real game.

Owns the RL entry point: Stable-Baselines3 PPO (CnnPolicy over a small cell-aligned CNN) for `frames`
env frames on `n_envs` games (envs.sb3: the real game, or N dreamed games in one batched forward),
resumable checkpoints, and every `eval_every` frames an evaluation over `eval_episodes` seeded REAL
games: one row in <run_dir>/metrics.jsonl with frames, real_score_mean/std (coins per episode; std
over episodes), real_len_mean, fps (whole PPO loop, evaluation excluded), env_fps (env steps alone)
and train_return_mean (last 100 training episodes; in the dream, its own predicted score).
`mode=baseline` evaluates the random and coin-seeker policies the same way.

    python -m train.rl env=real frames=2000000 seed=0 run_dir=runs/rl/real-s0
    python -m train.rl env=dream checkpoint=runs/coinchase/self_forcing/checkpoint run_dir=runs/rl/dream-sf-s0
    python -m train.rl mode=baseline seed=0 run_dir=runs/rl/baselines

Checkpoints: model_<frames>.zip (SB3 `model.save`), then state.json (frames done, the model file), each
written under a temporary name and renamed. The same run_dir resumes (raise `frames` to go on; PPO's
hyperparameters are the saved ones); metrics rows past the resumed frame count are dropped.
Evaluations, checkpoints and the end fall on the first rollout (n_steps * n_envs frames) boundary at
or after each multiple of eval_every / ckpt_every and at frames.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from torch import nn
from tqdm import tqdm

from envs.coinchase import CELL_PX, CoinChaseEnv
from envs.policies import make_policy
from envs.sb3 import ENV_KINDS, StepClock, make_vec_env
from train.common.cli import hydra_main

# act(obs (E, 64, 64, 3) uint8, infos of those E envs, their episode ids (E,)) -> actions (E,)
Actor = Callable[[np.ndarray, list[dict[str, Any]], np.ndarray], np.ndarray]
BASELINES = ("random", "seeker")


@dataclass
class RLConfig:
    mode: str = "train"                 # train: PPO | baseline: evaluate the random and coin-seeker policies
    env: str = "real"                   # PPO trains in: real (CoinChase) | dream (the world model)
    checkpoint: str = ""                # dream: world-model checkpoint dir; "" = the bundled one
    frames: int = 2_000_000             # environment frames to train for (all n_envs together)
    n_envs: int = 16                    # games stepped together (the dream: one batched forward)
    seed: int = 0                       # PPO, env and policy seed; also picks the evaluation episodes
    run_dir: str = "runs/rl/default"    # checkpoints and metrics.jsonl
    ckpt_every: int = 100_000           # frames between checkpoints (and one at the end)
    eval_every: int = 100_000           # frames between real-game evaluations (and one at start and end)
    eval_episodes: int = 20             # seeded real-game episodes per evaluation, played together
    eval_seed: int = 12345              # episode i of an evaluation is seeded from (eval_seed, seed, i)
    eval_horizon: int = 1000            # real-game steps before an evaluation episode truncates
    eval_deterministic: bool = False    # argmax actions; False samples as in training (early argmax policies loop)
    train_horizon: int = 1000           # steps before a training episode truncates (real or dream)
    seeker_epsilon: float = 0.0         # baseline coin-seeker: chance of a random legal move per step
    denoise_steps: int = 0              # dream: denoising steps per frame; 0 = the checkpoint's own
    device: str = "cpu"                 # torch device of the dream and of PPO
    dtype: str = "auto"                 # dream DiT weights: auto (envs.dream.pick_dtype) | float32 | bfloat16 | float16
    compile: bool = False               # dream: torch.compile its step (~3 min once; on CPU 1.3x at N=64, 2.6x at N=1)
    features: str = "cell"              # CNN features extractor: cell (CellCNN) | nature (SB3's NatureCNN)
    features_dim: int = 256             # width of the extractor's output
    cnn_width: int = 16                 # cell: channels per game cell (the grid convs use twice this)
    n_steps: int = 128                  # PPO rollout length per env (a rollout is n_steps * n_envs frames)
    batch_size: int = 256               # PPO minibatch
    n_epochs: int = 4                   # PPO epochs per rollout
    learning_rate: float = 2.5e-4       # Adam
    gamma: float = 0.99                 # discount
    gae_lambda: float = 0.95            # GAE
    clip_range: float = 0.1             # PPO ratio clip
    ent_coef: float = 0.01              # entropy bonus
    vf_coef: float = 0.5                # value loss weight
    torch_threads: int = 0              # torch.set_num_threads; 0 = leave torch's default
    progress: bool = True               # tqdm bar over frames


class CellCNN(BaseFeaturesExtractor):
    """(B, 3, 64, 64) -> (B, features_dim). A stride-8 8x8 conv reads each 8-pixel game cell into one
    vector (the grid, (B, width, 8, 8)), two 3x3 convs mix neighbouring cells, a linear layer reads the grid.
    Aligned with CoinChase's cells where NatureCNN's 8x8 stride-4 kernels straddle them."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256, width: int = 16):
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]
        self.cnn = nn.Sequential(nn.Conv2d(channels, width, CELL_PX, stride=CELL_PX), nn.ReLU(),
                                 nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations))


class ProgressBar(BaseCallback):
    """tqdm over environment frames, across the several `learn` calls of one run."""

    def __init__(self, total: int, done: int, enabled: bool):
        super().__init__()
        self.bar = tqdm(total=total, initial=done, unit="frame", unit_scale=True, desc="ppo", disable=not enabled)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True


# ---------------------------------------------------------------------- evaluation in the real game
def episode_seed(eval_seed: int, seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([eval_seed, seed, episode]).generate_state(1)[0])


def evaluate(act: Actor, episodes: int, eval_seed: int, seed: int, horizon: int) -> dict[str, float]:
    """Play `episodes` seeded real CoinChase episodes together under `act`: score (coins) and length stats."""
    games = [CoinChaseEnv(horizon=horizon) for _ in range(episodes)]
    started = [game.reset(seed=episode_seed(eval_seed, seed, i)) for i, game in enumerate(games)]
    obs = np.stack([o for o, _ in started])                # (E, 64, 64, 3) uint8
    infos = [info for _, info in started]
    scores, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    alive = np.ones(episodes, bool)
    while alive.any():
        rows = np.flatnonzero(alive)
        actions = act(obs[rows], [infos[i] for i in rows], rows)
        for i, action in zip(rows, actions, strict=True):
            obs[i], reward, terminated, truncated, infos[i] = games[i].step(int(action))
            scores[i] += reward
            lengths[i] += 1
            alive[i] = not (terminated or truncated)
    return {"real_score_mean": float(scores.mean()), "real_score_std": float(scores.std()),
            "real_len_mean": float(lengths.mean()), "episodes": episodes}


def policy_actor(name: str, episodes: int, seed: int, epsilon: float) -> Actor:
    """A scripted policy per episode (envs.policies; random = uniform, one action per step), seeded (seed, i)."""
    policies = []
    for i in range(episodes):
        policy = make_policy(name, 5, np.random.default_rng([seed, i]), epsilon=epsilon, min_repeat=1, max_repeat=1)
        policy.reset(np.random.default_rng([seed, i]))
        policies.append(policy)
    return lambda obs, infos, rows: np.array([policies[r](o, info) for o, info, r in zip(obs, infos, rows, strict=True)])


def ppo_actor(model: PPO, deterministic: bool) -> Actor:
    return lambda obs, infos, rows: model.predict(obs, deterministic=deterministic)[0]


# ---------------------------------------------------------------------- checkpoints and metrics
def load_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write `path` through a temporary file renamed over it: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(model: PPO, run_dir: Path, cfg: RLConfig) -> Path:
    """model_<frames>.zip, then state.json naming it (so it always names a whole model); older models removed."""
    frames = int(model.num_timesteps)
    path = run_dir / f"model_{frames}.zip"
    _atomic(path, model.save)
    state = {"frames": frames, "model": path.name, "env": cfg.env, "checkpoint": _world_model(cfg), "config": asdict(cfg)}
    _atomic(run_dir / "state.json", lambda f: f.write(json.dumps(state, indent=1).encode()))
    for old in run_dir.glob("model_*.zip"):
        if old != path:
            old.unlink()
    return path


def _world_model(cfg: RLConfig) -> str | None:
    """The dream's world-model checkpoint, resolved ("" = the bundled one); None for the real game."""
    return None if cfg.env == "real" else str(Path(cfg.checkpoint).resolve()) if cfg.checkpoint else ""


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(run_dir: Path, frames: int) -> None:
    """Drop PPO rows past `frames` (written after the checkpoint a resumed run restarts from)."""
    keep = [r for r in read_metrics(run_dir) if r.get("policy") != "ppo" or r["frames"] <= frames]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))


# ---------------------------------------------------------------------- training
def _validate(cfg: RLConfig) -> None:
    if cfg.mode not in ("train", "baseline"):
        raise ValueError(f"mode must be train or baseline, got {cfg.mode!r}")
    if cfg.env not in ENV_KINDS:
        raise ValueError(f"env must be one of {ENV_KINDS}, got {cfg.env!r}")
    if cfg.features not in ("cell", "nature"):
        raise ValueError(f"features must be cell or nature, got {cfg.features!r}")
    for name in ("frames", "n_envs", "ckpt_every", "eval_every", "eval_episodes", "n_steps", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def build_env(cfg: RLConfig) -> tuple[VecEnv, StepClock]:
    """The training VecEnv (episode stats by VecMonitor; PPO adds VecTransposeImage) and its step clock."""
    base = make_vec_env(cfg.env, cfg.n_envs, cfg.checkpoint or None, cfg.seed, cfg.train_horizon, cfg.device,
                        cfg.dtype, cfg.denoise_steps or None, cfg.compile)
    clock = StepClock(base)
    return VecMonitor(clock), clock


def build_model(cfg: RLConfig, env: VecEnv, run_dir: Path) -> PPO:
    """A new PPO, or the one state.json names (resume), on `env`."""
    state = load_state(run_dir)
    if state is not None:
        if (state["env"], state["checkpoint"]) != (cfg.env, _world_model(cfg)):
            raise ValueError(f"{run_dir} holds a PPO trained with env={state['env']} (world model {state['checkpoint']!r}), "
                             f"not env={cfg.env} ({_world_model(cfg)!r}); use another run_dir")
        model = PPO.load(run_dir / state["model"], env=env, device=cfg.device)
        model.num_timesteps = int(state["frames"])
        model.set_random_seed(cfg.seed + model.num_timesteps)   # a resumed run plays new episodes
        return model
    extractor, kwargs = (CellCNN, {"width": cfg.cnn_width}) if cfg.features == "cell" else (NatureCNN, {})
    return PPO("CnnPolicy", env, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
               learning_rate=cfg.learning_rate, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range,
               ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef, seed=cfg.seed, device=cfg.device, verbose=0,
               policy_kwargs={"features_extractor_class": extractor,
                              "features_extractor_kwargs": {"features_dim": cfg.features_dim, **kwargs}})


def _eval_row(cfg: RLConfig, model: PPO, extra: dict[str, Any]) -> dict[str, Any]:
    stats = evaluate(ppo_actor(model, cfg.eval_deterministic), cfg.eval_episodes, cfg.eval_seed, cfg.seed, cfg.eval_horizon)
    returns = [info["r"] for info in model.ep_info_buffer or []]
    return {"policy": "ppo", "env": cfg.env, "seed": cfg.seed, "frames": int(model.num_timesteps), **stats,
            "train_return_mean": float(np.mean(returns)) if returns else None, **extra}


def train(cfg: RLConfig) -> dict[str, Any]:
    """Train (or resume) PPO up to cfg.frames frames; returns the last metrics row."""
    _validate(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env, clock = build_env(cfg)
    try:
        model = build_model(cfg, env, run_dir)
        done = int(model.num_timesteps)
        truncate_metrics(run_dir, done)
        row: dict[str, Any] = {}
        if done == 0:
            row = _eval_row(cfg, model, {"fps": None, "env_fps": None})
            append_metrics(run_dir, row)
        progress = ProgressBar(cfg.frames, done, cfg.progress)
        while done < cfg.frames:
            stop = min(cfg.frames, (done // cfg.eval_every + 1) * cfg.eval_every, (done // cfg.ckpt_every + 1) * cfg.ckpt_every)
            clock.restart()
            start = time.perf_counter()
            model.learn(stop - done, callback=progress, reset_num_timesteps=False)
            seconds, before, done = time.perf_counter() - start, done, int(model.num_timesteps)
            speed = {"fps": (done - before) / seconds, "env_fps": clock.fps}
            progress.bar.set_postfix(fps=f"{speed['fps']:.0f}", env_fps=f"{speed['env_fps']:.0f}")
            if done // cfg.eval_every > before // cfg.eval_every or done >= cfg.frames:
                row = _eval_row(cfg, model, speed)
                append_metrics(run_dir, row)
                progress.bar.write(json.dumps(row))
            if done // cfg.ckpt_every > before // cfg.ckpt_every or done >= cfg.frames:
                save_checkpoint(model, run_dir, cfg)
        progress.bar.close()
        return row or next((r for r in reversed(read_metrics(run_dir)) if r.get("policy") == "ppo"), {})
    finally:
        env.close()


def baseline(cfg: RLConfig) -> list[dict[str, Any]]:
    """Evaluate the random and coin-seeker policies in the real game, one metrics row each."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in BASELINES:
        act = policy_actor(name, cfg.eval_episodes, cfg.seed, cfg.seeker_epsilon)
        stats = evaluate(act, cfg.eval_episodes, cfg.eval_seed, cfg.seed, cfg.eval_horizon)
        rows.append({"policy": name, "env": "real", "seed": cfg.seed, "frames": 0, **stats})
        append_metrics(run_dir, rows[-1])
    return rows


def main(cfg: RLConfig) -> None:
    _validate(cfg)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    rows = baseline(cfg) if cfg.mode == "baseline" else [train(cfg)]
    for row in rows:
        print(json.dumps(row))
    print(f"metrics -> {Path(cfg.run_dir) / 'metrics.jsonl'}")


if __name__ == "__main__":
    hydra_main("rl", RLConfig, main)
