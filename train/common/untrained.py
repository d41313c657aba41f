"""Untrained world-model checkpoints with real start contexts: for tests, benchmarks and smoke runs.

Speed and plumbing do not depend on what the weights learned, so tests of the envs and the viewer
and the benchmark's model timings build a randomly initialised checkpoint here instead of training.
Any image Gymnasium env with Discrete(n) actions will do (`save_untrained(path, env_id=...)`, CoinChase
by default): the start bank holds contexts from random play of that env, frames resized to the model's
64x64, so resets look like the game, and the config names the env id, as a trained checkpoint does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, SamplerConfig, WorldModelConfig, dit_preset
from worldmodel.dit import DiT

COINCHASE_ID = "dreamgym/CoinChase-v0"
COINCHASE_EVENT_CHANNELS = 2   # the bundled CoinChase model draws the enemy's and the coin's cells first


def start_contexts(env_id: str, n: int, length: int, seed: int = 0, frame_size: int = 64,
                   env_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """n contexts of `length` frames from uniformly random play of `env_id`: frames (n, T, S, S, 3) uint8 resized to
    `frame_size`, actions (n, T) int64, and the env's action count.

    Action k is the one taken before frame k; frame 0 gets the null action id (the action count). An episode
    that ends before `length` frames is dropped and the next one played."""
    from envs.recording import check_recordable, make_env, resize_frame   # noqa: PLC0415

    env, rng = make_env(env_id, **(env_kwargs or {})), np.random.default_rng(seed)
    try:
        check_recordable(env)
        n_actions = int(env.action_space.n)
        frames, actions = [], []
        for i in range(n):
            obs, _ = env.reset(seed=seed * 10_000 + i)
            clip, acts = [resize_frame(np.asarray(obs), frame_size)], [n_actions]
            while len(clip) < length:
                action = int(rng.integers(n_actions))
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    obs, _ = env.reset()
                    clip, acts = [resize_frame(np.asarray(obs), frame_size)], [n_actions]
                    continue
                clip.append(resize_frame(np.asarray(obs), frame_size))
                acts.append(action)
            frames.append(np.stack(clip))
            actions.append(acts)
    finally:
        env.close()
    return torch.from_numpy(np.stack(frames)), torch.tensor(actions, dtype=torch.int64), n_actions


def coinchase_contexts(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n real contexts of `length` frames from random CoinChase play: (n, T, 64, 64, 3) uint8, (n, T) int64.

    Action k is the one taken before frame k; frame 0 gets the null action id (5)."""
    frames, actions, _ = start_contexts(COINCHASE_ID, n, length, seed)
    return frames, actions


def save_untrained(path: str | Path, size: str = "tiny", widths: tuple[int, ...] = (8, 8, 8), bank: int = 4,
                   context: int = 2, seed: int = 0, env_id: str = COINCHASE_ID,
                   env_kwargs: dict[str, Any] | None = None, **dit_overrides) -> Path:
    """Write a randomly initialised checkpoint of the image env `env_id` (64x64 frames, its Discrete actions) to
    `path`, with a bank of `bank` contexts of `context` frames from random play of it and `env_id` in its config.

    The CoinChase default is shaped like the bundled model: it draws the enemy's and the coin's cells first (2
    entity events) unless `event_channels=0` is given; other games get no entity events unless asked for."""
    dit_overrides.setdefault("event_channels", COINCHASE_EVENT_CHANNELS if env_id == COINCHASE_ID else 0)
    ae_config = AutoencoderConfig(widths=widths)
    frames, actions, n_actions = start_contexts(env_id, bank, context, seed, ae_config.frame_size, env_kwargs)
    torch.manual_seed(seed)
    config = WorldModelConfig(autoencoder=ae_config,
                              dit=dit_preset(size, latent_channels=ae_config.latent_channels,
                                             latent_size=ae_config.latent_size, n_actions=n_actions, **dit_overrides),
                              sampler=SamplerConfig(), stage="untrained", env_id=env_id)
    dit = DiT(config.dit)
    with torch.no_grad():   # adaLN-Zero starts at identity and ignores actions; give them a visible effect
        dit.out.weight.normal_(0.0, 0.02)
        dit.velocity_layer.weight.normal_(0.0, 0.02)
        dit.ada_out[-1].weight.normal_(0.0, 1.0)
        dit.action_embed.weight.normal_(0.0, 1.0)
        dit.termination_head.weight.zero_()    # episodes end only by truncation until trained
        dit.termination_head.bias.fill_(-10.0)
    return checkpoint.save(path, config, Autoencoder(ae_config), dit, frames, actions)
