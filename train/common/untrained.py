"""Untrained world-model checkpoints with real start contexts: for tests, benchmarks and smoke runs.

Speed and plumbing do not depend on what the weights learned, so tests of the envs and the viewer
and the benchmark's model timings build a randomly initialised checkpoint here instead of training.
Any image Gymnasium env with Discrete(n) actions will do (`save_untrained(path, env_id=...)`, the bundled
game by default): the start bank holds contexts from random play of that env, frames resized to the model's
64x64, so resets look like the game, and the config names the env id, as a trained checkpoint does. The bundled
game's untrained model is shaped like the bundled checkpoint (its entity event channels, read from
envs/checkpoints); any other game's has none unless asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import BUNDLED_ENV_ID as BUNDLED_ENV_ID   # the default env of an untrained checkpoint
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, SamplerConfig, WorldModelConfig, dit_preset
from worldmodel.dit import DiT



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


def bundled_event_channels(env_id: str) -> int:
    """The entity event channels of the bundled checkpoint (envs/checkpoints) when `env_id` is its game, else 0."""
    from envs.dream import DEFAULT_CHECKPOINT   # noqa: PLC0415

    config, _ = checkpoint.read_config(DEFAULT_CHECKPOINT)
    return config.dit.event_channels if env_id == config.env_id else 0


def save_untrained(path: str | Path, size: str = "tiny", widths: tuple[int, ...] = (8, 8, 8), bank: int = 4,
                   context: int = 2, seed: int = 0, env_id: str = BUNDLED_ENV_ID,
                   env_kwargs: dict[str, Any] | None = None, **dit_overrides) -> Path:
    """Write a randomly initialised checkpoint of the image env `env_id` (64x64 frames, its Discrete actions) to
    `path`, with a bank of `bank` contexts of `context` frames from random play of it and `env_id` in its config.

    The bundled game's is shaped like the bundled model: it draws that model's entity cells first
    (`bundled_event_channels`) unless `event_channels=0` is given; other games get no entity events unless asked
    for."""
    dit_overrides.setdefault("event_channels", bundled_event_channels(env_id))
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
