"""Safe tensor files: atomic directory writes and safetensors reads that refuse a bad file by name.

What every writer and reader of weights shares (world-model checkpoints, the event model, the score bar, the
stages' resumable state), with no model imports, so any model file may use it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file and the problem."""


def write_dir_atomically(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Let `fill(tmp_dir)` write a directory aside, then move it to `path` (replacing an old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, refusing a missing or corrupt one with the file's name."""
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors ({error})") from error


def load_weights(module: nn.Module, file: Path) -> None:
    """Load `file` into `module`, refusing missing, unexpected or mis-shaped tensors by name."""
    state = read_tensors(file)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{file}: does not match the config (missing {missing[:5]}, unexpected {unexpected[:5]}, "
                              f"shape mismatches {shapes[:5]})")
    module.load_state_dict(state)
