"""Package a trained checkpoint as the small default one the envs open with no argument.

Copies a stage's checkpoint dir with float16 weights (loaded back into float32 modules) and the
first `bank` start contexts, and records where it came from in `<dst>/SOURCE.json`:

    python -m train.bundle src=runs/coinchase/self_forcing/checkpoint dst=envs/checkpoints/coinchase
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from train.common.cli import hydra_main
from worldmodel import checkpoint

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class BundleConfig:
    src: str = "runs/coinchase/self_forcing/checkpoint"    # a stage's checkpoint dir
    dst: str = "envs/checkpoints/coinchase"                # the bundled default
    bank: int = 16                                         # start contexts kept
    weights_dtype: str = "float16"                         # float16 | bfloat16 | float32
    note: str = ""                                         # free text kept in SOURCE.json (e.g. the command)


def bundle(cfg: BundleConfig) -> Path:
    if cfg.weights_dtype not in DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(DTYPES)}, got {cfg.weights_dtype!r}")
    model = checkpoint.load(cfg.src)
    if model.start_frames is None or model.dit is None:
        raise ValueError(f"{cfg.src} needs a DiT and a start bank to be an env's default checkpoint")
    path = checkpoint.save(cfg.dst, model.config, model.autoencoder, model.dit, model.start_frames[:cfg.bank],
                           model.start_actions[:cfg.bank], weights_dtype=DTYPES[cfg.weights_dtype])
    source = {"source": str(cfg.src), "stage": model.config.stage, "weights_dtype": cfg.weights_dtype,
              "bank": int(min(cfg.bank, len(model.start_frames))), "note": cfg.note}
    (path / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    print(f"bundled {cfg.src} ({model.config.stage}) -> {path} ({size:.1f} MiB)")
    return path


if __name__ == "__main__":
    hydra_main("bundle", BundleConfig, bundle)
