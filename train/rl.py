"""PPO in any game, trained in the real game or inside its dream, always judged in the real game.

Owns the RL entry point: Stable-Baselines3 PPO (CnnPolicy over a small cell-aligned CNN) for `frames`
env frames on `n_envs` games (envs.sb3: N dreamed games in one batched forward of the world model at
`checkpoint`, or N real games), resumable checkpoints, and every `eval_every` frames an evaluation over
`eval_episodes` seeded REAL games (train.rl_eval). The game is `env_id`, by default the one the checkpoint
names (the bundled checkpoint: dreamgym/CoinChase-v0); real frames are resized to the dream's frame size, so
the same policy plays both. One row per evaluation in <run_dir>/metrics.jsonl: policy, env, env_id, seed,
frames, real_return_mean/std (sum of rewards per real episode; std over episodes), real_len_mean,
real_score_mean/std (the game's own info["score"] at episode end, for games that report one), episodes,
fps (whole PPO loop, evaluation excluded), env_fps (env steps alone) and train_return_mean (last 100 training
episodes; in the dream, its own predicted rewards).
`mode=baseline` evaluates the random policy (actions held for a few steps) the same way, and the game's own
scripted players too (envs.policies.baseline_policies: the bundled game's coin seeker).

    python -m train.rl env=real frames=2000000 seed=0 run_dir=runs/rl/real-s0
    python -m train.rl env=dream checkpoint=runs/coinchase/self_forcing/checkpoint run_dir=runs/rl/dream-sf-s0
    python -m train.rl env=dream checkpoint=runs/catch/self_forcing/checkpoint run_dir=runs/rl/catch-dream-s0
    python -m train.rl env=real env_id=dreamgym/Catch-v0 run_dir=runs/rl/catch-real-s0
    python -m train.rl mode=baseline seed=0 run_dir=runs/rl/baselines
    python -m train.rl mode=baseline env_id=dreamgym/Catch-v0 run_dir=runs/rl/catch-baselines

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
import warnings
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

from envs.policies import baseline_policies
from envs.sb3 import ENV_KINDS, StepClock, dream_game, make_vec_env
from train.common.cli import hydra_main
from train.rl_eval import evaluate, game_actions, policy_actor, ppo_actor

CELL_PX = 8   # CellCNN reads the frame in 8 x 8 pixel cells, the cells of the world model's autoencoder


@dataclass
class RLConfig:
    mode: str = "train"                 # train: PPO | baseline: evaluate random play (and the game's own players)
    env: str = "real"                   # PPO trains in: real (the game env_id) | dream (the world model checkpoint)
    checkpoint: str = ""                # world-model dir ("" = the bundled one): the dream, its game, its frame size
    env_id: str = ""                    # the real game's Gymnasium id (ALE ids with ale-py); "" = the checkpoint's game
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
    random_min_repeat: int = 1          # baseline random policy: each uniformly random action is held for
    random_max_repeat: int = 8          #   a uniform number of steps in [min, max] (as recorded; 1, 1 = plain random)
    seeker_epsilon: float = 0.0         # baseline game players (the coin seeker): chance of a random legal move
    denoise_steps: int = 0              # dream: denoising steps per frame; 0 = the checkpoint's own
    device: str = "cpu"                 # torch device of the dream and of PPO
    dtype: str = "auto"                 # dream DiT weights: auto (envs.dream.pick_dtype) | float32 | bfloat16 | float16
    compile: bool = False               # dream: torch.compile its step (minutes once at the start, faster steps after)
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
    Aligned with the autoencoder's cells (and a game's own 8-pixel grid) where NatureCNN's 8x8 stride-4 kernels
    straddle them; any frame size works (a size that is no multiple of 8 drops the last partial cells)."""

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


# ---------------------------------------------------------------------- the game
def resolve_game(cfg: RLConfig) -> tuple[str, int]:
    """The real game's id (cfg.env_id, else the checkpoint's) and the frame size both games are seen at (the
    checkpoint's). For env=dream, a dream of another game warns and one with another action count is refused."""
    own_id, frame_size, dream_actions = dream_game(cfg.checkpoint or None)
    env_id = cfg.env_id or own_id
    if cfg.env == "dream" and cfg.mode == "train":
        if env_id != own_id:
            warnings.warn(f"the world model at {cfg.checkpoint or 'the bundled checkpoint'} dreams {own_id}; "
                          f"its PPO is judged in {env_id}", stacklevel=2)
        real_actions = game_actions(env_id, frame_size)
        if real_actions != dream_actions:
            raise ValueError(f"the dream has {dream_actions} actions and the real game {env_id} has {real_actions}: "
                             "PPO trained in the one cannot play the other")
    return env_id, frame_size


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


def save_checkpoint(model: PPO, run_dir: Path, cfg: RLConfig, env_id: str) -> Path:
    """model_<frames>.zip, then state.json naming it (so it always names a whole model); older models removed."""
    frames = int(model.num_timesteps)
    path = run_dir / f"model_{frames}.zip"
    _atomic(path, model.save)
    state = {"frames": frames, "model": path.name, "env": cfg.env, "env_id": env_id, "checkpoint": _world_model(cfg),
             "config": asdict(cfg)}
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
    for name in ("frames", "n_envs", "ckpt_every", "eval_every", "eval_episodes", "n_steps", "batch_size",
                 "eval_horizon", "train_horizon", "random_min_repeat"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.random_max_repeat < cfg.random_min_repeat:
        raise ValueError(f"random_max_repeat must be >= random_min_repeat, got {cfg.random_max_repeat}")


def build_env(cfg: RLConfig, env_id: str) -> tuple[VecEnv, StepClock]:
    """The training VecEnv (episode stats by VecMonitor; PPO adds VecTransposeImage) and its step clock."""
    base = make_vec_env(cfg.env, cfg.n_envs, cfg.checkpoint or None, cfg.seed, cfg.train_horizon, cfg.device,
                        cfg.dtype, cfg.denoise_steps or None, cfg.compile, env_id=env_id)
    clock = StepClock(base)
    return VecMonitor(clock), clock


def build_model(cfg: RLConfig, env: VecEnv, run_dir: Path, env_id: str) -> PPO:
    """A new PPO, or the one state.json names (resume), on `env`."""
    state = load_state(run_dir)
    if state is not None:
        held = (state["env"], state["checkpoint"], state.get("env_id", env_id))   # none named: this game
        if held != (cfg.env, _world_model(cfg), env_id):
            raise ValueError(f"{run_dir} holds a PPO trained with env={state['env']} (world model "
                             f"{state['checkpoint']!r}, game {held[2]}), not env={cfg.env} ({_world_model(cfg)!r}, "
                             f"{env_id}); use another run_dir")
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


def _eval_row(cfg: RLConfig, model: PPO, game: tuple[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    stats = evaluate(ppo_actor(model, cfg.eval_deterministic), *game, cfg.eval_episodes, cfg.eval_seed, cfg.seed,
                     cfg.eval_horizon)
    returns = [info["r"] for info in model.ep_info_buffer or []]
    return {"policy": "ppo", "env": cfg.env, "env_id": game[0], "seed": cfg.seed, "frames": int(model.num_timesteps),
            **stats,
            "train_return_mean": float(np.mean(returns)) if returns else None, **extra}


def train(cfg: RLConfig) -> dict[str, Any]:
    """Train (or resume) PPO up to cfg.frames frames; returns the last metrics row."""
    _validate(cfg)
    game = resolve_game(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env, clock = build_env(cfg, game[0])
    try:
        model = build_model(cfg, env, run_dir, game[0])
        done = int(model.num_timesteps)
        truncate_metrics(run_dir, done)
        row: dict[str, Any] = {}
        if done == 0:
            row = _eval_row(cfg, model, game, {"fps": None, "env_fps": None})
            append_metrics(run_dir, row)
        progress = ProgressBar(cfg.frames, done, cfg.progress)
        while done < cfg.frames:
            stop = min(cfg.frames, (done // cfg.eval_every + 1) * cfg.eval_every,
                       (done // cfg.ckpt_every + 1) * cfg.ckpt_every)
            clock.restart()
            start = time.perf_counter()
            model.learn(stop - done, callback=progress, reset_num_timesteps=False)
            seconds, before, done = time.perf_counter() - start, done, int(model.num_timesteps)
            speed = {"fps": (done - before) / seconds, "env_fps": clock.fps}
            progress.bar.set_postfix(fps=f"{speed['fps']:.0f}", env_fps=f"{speed['env_fps']:.0f}")
            if done // cfg.eval_every > before // cfg.eval_every or done >= cfg.frames:
                row = _eval_row(cfg, model, game, speed)
                append_metrics(run_dir, row)
                progress.bar.write(json.dumps(row))
            if done // cfg.ckpt_every > before // cfg.ckpt_every or done >= cfg.frames:
                save_checkpoint(model, run_dir, cfg, game[0])
        progress.bar.close()
        return row or next((r for r in reversed(read_metrics(run_dir)) if r.get("policy") == "ppo"), {})
    finally:
        env.close()


def baseline(cfg: RLConfig) -> list[dict[str, Any]]:
    """Evaluate scripted policies in the real game, one metrics row each: random (actions held for
    [random_min_repeat, random_max_repeat] steps), then the game's own players (envs.policies.baseline_policies)."""
    _validate(cfg)
    env_id, frame_size = resolve_game(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    n_actions = game_actions(env_id, frame_size)
    rows = []
    for name in baseline_policies(env_id):
        act = policy_actor(name, n_actions, cfg.eval_episodes, cfg.seed, cfg.seeker_epsilon, cfg.random_min_repeat,
                           cfg.random_max_repeat)
        stats = evaluate(act, env_id, frame_size, cfg.eval_episodes, cfg.eval_seed, cfg.seed, cfg.eval_horizon)
        rows.append({"policy": name, "env": "real", "env_id": env_id, "seed": cfg.seed, "frames": 0, **stats})
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
