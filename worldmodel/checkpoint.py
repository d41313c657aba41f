"""World-model checkpoints: a directory of config.json + safetensors files, never pickle.

Layout:
    config.json               WorldModelConfig (autoencoder, dit, sampler, latent scale, stage) + format version
    autoencoder.safetensors   Autoencoder weights
    model.safetensors         DiT weights (absent for an autoencoder-only checkpoint)
    start_frames.safetensors  bank of real start contexts: frames uint8 (K, T, H, W, 3), actions int64 (K, T)

Writes are atomic (a sibling temp dir renamed into place). Loading refuses a missing, corrupt,
partial or mismatched checkpoint with a message naming the file and the problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from worldmodel.autoencoder import Autoencoder
from worldmodel.config import (AutoencoderConfig, DiTConfig, SamplerConfig, WorldModelConfig,
                               dataclass_from_dict, to_dict)
from worldmodel.dit import DiT
from worldmodel.files import CheckpointError, load_weights, read_tensors, write_dir_atomically

__all__ = ["CheckpointError", "WorldModel", "load", "load_weights", "read_config", "read_tensors", "save",
           "write_dir_atomically"]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
AUTOENCODER_FILE = "autoencoder.safetensors"
MODEL_FILE = "model.safetensors"
START_FILE = "start_frames.safetensors"


@dataclass
class WorldModel:
    """A loaded checkpoint: ready-to-run modules plus the bank of real start contexts."""
    config: WorldModelConfig
    autoencoder: Autoencoder
    dit: DiT | None
    start_frames: torch.Tensor | None    # (K, T, H, W, 3) uint8
    start_actions: torch.Tensor | None   # (K, T) int64, the action before each frame (null id for the first)


def save(path: str | Path, config: WorldModelConfig, autoencoder: Autoencoder, dit: DiT | None = None,
         start_frames: torch.Tensor | None = None, start_actions: torch.Tensor | None = None,
         weights_dtype: torch.dtype | None = None) -> Path:
    """Write a world-model checkpoint directory atomically.

    weights_dtype (e.g. torch.float16) stores floating weights smaller; `load` casts them back to the
    modules' float32."""
    if (start_frames is None) != (start_actions is None):
        raise ValueError("start_frames and start_actions go together")

    def fill(tmp: Path) -> None:
        meta = {"format_version": FORMAT_VERSION, "autoencoder": to_dict(config.autoencoder),
                "dit": to_dict(config.dit),
                "sampler": to_dict(config.sampler), "latent_scale": config.latent_scale, "stage": config.stage,
                "env_id": config.env_id, "has_model": dit is not None}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        save_file(_contiguous(autoencoder.state_dict(), weights_dtype), str(tmp / AUTOENCODER_FILE))
        if dit is not None:
            save_file(_contiguous(dit.state_dict(), weights_dtype), str(tmp / MODEL_FILE))
        if start_frames is not None:
            save_file({"frames": start_frames.contiguous().cpu(), "actions": start_actions.contiguous().cpu()},
                      str(tmp / START_FILE))

    return write_dir_atomically(path, fill)


def _contiguous(state: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    cast = lambda v: v.to(dtype) if dtype is not None and v.is_floating_point() else v  # noqa: E731
    return {k: cast(v.detach()).contiguous().cpu() for k, v in state.items()}


def read_config(path: str | Path) -> tuple[WorldModelConfig, bool]:
    """Parse config.json of a checkpoint dir; returns the config and whether a DiT is stored."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; {path} is not a dreamgym checkpoint")
    try:
        meta = json.loads(file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{file}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        config = WorldModelConfig(autoencoder=dataclass_from_dict(AutoencoderConfig, meta["autoencoder"]),
                                  dit=dataclass_from_dict(DiTConfig, meta["dit"]),
                                  sampler=dataclass_from_dict(SamplerConfig, meta["sampler"]),
                                  latent_scale=float(meta["latent_scale"]), stage=str(meta["stage"]),
                                  env_id=str(meta.get("env_id", "")))
        return config, bool(meta["has_model"])
    except CheckpointError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{file}: unreadable config ({type(error).__name__}: {error})") from error


def load(path: str | Path, device: torch.device | str = "cpu") -> WorldModel:
    """Open a checkpoint directory: modules in eval mode on `device`, plus the start bank if present."""
    path = Path(path)
    config, has_model = read_config(path)
    autoencoder = Autoencoder(config.autoencoder)
    load_weights(autoencoder, path / AUTOENCODER_FILE)
    dit = None
    if has_model:
        dit = DiT(config.dit)
        load_weights(dit, path / MODEL_FILE)
        dit = dit.to(device).eval()
    start_frames = start_actions = None
    if (path / START_FILE).exists():
        bank = read_tensors(path / START_FILE)
        if set(bank) != {"frames", "actions"}:
            raise CheckpointError(f"{path / START_FILE}: expected tensors 'frames' and 'actions', found {sorted(bank)}")
        start_frames, start_actions = bank["frames"], bank["actions"]
    return WorldModel(config, autoencoder.to(device).eval(), dit, start_frames, start_actions)
