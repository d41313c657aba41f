"""`python -m train.eval.decoders "checkpoints=[A,B]"`: autoencoders compared on the held-out real frames.

For each checkpoint dir (an autoencoder stage's or decoder stage's, or a world model's): the held-out
episodes of the autoencoder stage's split are encoded with its encoder and decoded with its decoder
(the decoder stage freezes the encoder, so every checkpoint of one chain decodes the same latents),
and scored against the real frames:
- `psnr`: mean PSNR in dB, each frame capped at 100 dB (as the autoencoder stage's evaluation);
- read-back agreement: `envs.coinchase_reader.read_state` on the real and on the decoded frames, the
  fraction of frames where the `player`, `coin`, `enemy` cells agree, where the three entity `counts`
  agree, where all of those do (`entities`), and where the score bar reads the same (`score`);
- `decode_mflop`: FLOPs of decoding one frame (torch FlopCounterMode), and the decoder's parameters.
Prints one JSON line per checkpoint and writes them all to `out` (a JSON file) when set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import worldmodel
from envs.coinchase_reader import GameState, read_state
from worldmodel.autoencoder import Autoencoder
from worldmodel.data import load_episodes, split_by_episode
from worldmodel.metrics import psnr

PSNR_CAP = 100.0    # dB given to a frame decoded exactly (its PSNR is infinite)
ENTITIES = ("player", "coin", "enemy")
COUNTS = ("n_players", "n_coins", "n_enemies")


@dataclass
class DecodersConfig:
    checkpoints: list[str] = field(default_factory=lambda: ["runs/coinchase/autoencoder/checkpoint"])
    dataset_id: str = "coinchase/mixed-v0"    # the dataset the autoencoder stage trained on
    data_root: str = "data/minari"
    val_fraction: float = 0.1                 # the autoencoder stage's split (its held-out episodes are scored)
    split_seed: int = 0
    frames: int | None = None                 # held-out frames scored, evenly spaced (None: all of them)
    batch: int = 256                          # frames encoded and decoded at once
    threads: int = 1                          # torch CPU threads
    out: str | None = None                    # JSON file of the results (None: print only)


def held_out_frames(cfg: DecodersConfig) -> np.ndarray:
    """(V, H, W, 3) uint8: the held-out episodes' frames (evenly thinned to cfg.frames)."""
    episodes, _ = load_episodes(cfg.dataset_id, cfg.data_root)
    train, val = split_by_episode(episodes, cfg.val_fraction, cfg.split_seed)
    frames = np.concatenate([e.frames for e in val or train])
    if cfg.frames is not None and cfg.frames < len(frames):
        frames = frames[np.linspace(0, len(frames) - 1, cfg.frames).astype(int)]
    return frames


@torch.no_grad()
def reconstruct(autoencoder: Autoencoder, frames: np.ndarray, batch: int) -> np.ndarray:
    """uint8 (V, H, W, 3) -> uint8 (V, H, W, 3): encoded, then decoded."""
    return np.concatenate([autoencoder.decode(autoencoder.encode(torch.from_numpy(frames[i:i + batch]))).numpy()
                           for i in range(0, len(frames), batch)])


def agreement(real: GameState, decoded: GameState) -> dict[str, float]:
    """Fraction of frames whose read-back state agrees, per entity cell, counts, all entities, score."""
    same = {name: (getattr(real, name) == getattr(decoded, name)).all(1) for name in ENTITIES}
    same["counts"] = np.all([getattr(real, name) == getattr(decoded, name) for name in COUNTS], axis=0)
    same["entities"] = np.all([same[name] for name in (*ENTITIES, "counts")], axis=0)
    same["score"] = real.score == decoded.score
    return {name: float(flags.mean()) for name, flags in same.items()}


@torch.no_grad()
def decode_cost(autoencoder: Autoencoder) -> dict[str, float]:
    """FLOPs of decoding one latent frame, and the decoder's parameter count."""
    config = autoencoder.config
    latents = torch.zeros(1, config.latent_channels, config.latent_size, config.latent_size)   # (1, C, h, w)
    with FlopCounterMode(display=False) as counter:
        autoencoder.decode(latents)
    return {"decode_mflop": counter.get_total_flops() / 1e6,
            "decoder_params_k": sum(p.numel() for p in autoencoder.decoder.parameters()) / 1e3}


def score(path: str, frames: np.ndarray, real: GameState, cfg: DecodersConfig) -> dict[str, Any]:
    autoencoder = worldmodel.load(path).autoencoder
    decoded = reconstruct(autoencoder, frames, cfg.batch)
    return {"checkpoint": path, "decoder": autoencoder.config.decoder, "frames": len(frames),
            "psnr": float(np.mean(np.minimum(psnr(decoded, frames), PSNR_CAP))),
            "agreement": agreement(real, read_state(decoded)), **decode_cost(autoencoder)}


def main(cfg: DecodersConfig) -> list[dict[str, Any]]:
    torch.set_num_threads(cfg.threads)
    frames = held_out_frames(cfg)
    real = read_state(frames)
    results = []
    for path in cfg.checkpoints:
        results.append(score(path, frames, real, cfg))
        print(json.dumps(results[-1]), flush=True)
    if cfg.out is not None:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    from train.common.cli import hydra_main

    hydra_main("decoders", DecodersConfig, main)
