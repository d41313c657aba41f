"""Untrained world-model checkpoints with real start contexts: for tests, benchmarks and smoke runs.

Speed and plumbing do not depend on what the weights learned, so tests of the envs and the viewer
and the benchmark's model timings build a randomly initialised checkpoint here instead of training.
The start bank holds real CoinChase contexts so resets look like the game.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs.coinchase import Action
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, SamplerConfig, WorldModelConfig, dit_preset
from worldmodel.dit import DiT


def coinchase_contexts(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n real contexts of `length` frames from random CoinChase play: (n, T, 64, 64, 3) uint8, (n, T) int64.

    Action k is the one taken before frame k; frame 0 gets the null action id (5)."""
    from envs.coinchase import CoinChaseEnv  # noqa: PLC0415

    env, rng = CoinChaseEnv(), np.random.default_rng(seed)
    frames, actions = [], []
    for i in range(n):
        obs, _ = env.reset(seed=seed * 10_000 + i)
        clip, acts = [obs], [env.action_space.n]
        while len(clip) < length:
            action = int(rng.integers(env.action_space.n))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
                clip, acts = [obs], [env.action_space.n]
                continue
            clip.append(obs)
            acts.append(action)
        frames.append(np.stack(clip))
        actions.append(acts)
    return torch.from_numpy(np.stack(frames)), torch.tensor(actions, dtype=torch.int64)


def save_untrained(path: str | Path, size: str = "tiny", widths: tuple[int, ...] = (8, 8, 8), bank: int = 4,
                   context: int = 2, seed: int = 0, **dit_overrides) -> Path:
    """Write a randomly initialised CoinChase-shaped checkpoint (64x64 frames, 5 actions) to `path`; like the bundled
    model it draws the enemy's and the coin's cells first (2 entity events) unless `event_channels=0` is given."""
    dit_overrides.setdefault("event_channels", 2)
    torch.manual_seed(seed)
    ae_config = AutoencoderConfig(widths=widths)
    config = WorldModelConfig(autoencoder=ae_config,
                              dit=dit_preset(size, latent_channels=ae_config.latent_channels,
                                             latent_size=ae_config.latent_size, n_actions=len(Action), **dit_overrides),
                              sampler=SamplerConfig(), stage="untrained")
    dit = DiT(config.dit)
    with torch.no_grad():   # adaLN-Zero starts at identity and ignores actions; give them a visible effect
        dit.out.weight.normal_(0.0, 0.02)
        dit.velocity_layer.weight.normal_(0.0, 0.02)
        dit.ada_out[-1].weight.normal_(0.0, 1.0)
        dit.action_embed.weight.normal_(0.0, 1.0)
        dit.termination_head.weight.zero_()    # episodes end only by truncation until trained
        dit.termination_head.bias.fill_(-10.0)
    frames, actions = coinchase_contexts(bank, context, seed)
    return checkpoint.save(path, config, Autoencoder(ae_config), dit, frames, actions)
