"""Package a trained checkpoint as the small default one the envs open with no argument.

Copies a stage's checkpoint dir with float16 weights (loaded back into float32 modules) and the
first `bank` start contexts, and records where it came from in `<dst>/SOURCE.json`. With
`autoencoder=DIR` the copy carries that checkpoint's autoencoder instead of src's (e.g. a new decoder
from `train.stages.decoder decoder=cell`); it must share src's encoder and latent scale, so the DiT's
latents decode unchanged:

    python -m train.bundle src=runs/coinchase/self_forcing/checkpoint dst=envs/checkpoints/coinchase
    python -m train.bundle src=envs/checkpoints/coinchase dst=runs/cell_decoder/coinchase_cell \
        autoencoder=runs/cell_decoder/long/w64_b1/checkpoint
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from train.common.cli import hydra_main
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
ENCODER_RTOL = 1e-2    # encoders compared up to bfloat16 storage (a bundled checkpoint's weights), relative
ENCODER_ATOL = 1e-6    # ... and absolute, for weights near zero


@dataclass
class BundleConfig:
    src: str = "runs/coinchase/self_forcing/checkpoint"    # a stage's checkpoint dir
    dst: str = "envs/checkpoints/coinchase"                # the bundled default
    bank: int = 16                                         # start contexts kept
    weights_dtype: str = "float16"                         # float16 | bfloat16 | float32
    autoencoder: str | None = None                         # a checkpoint dir whose autoencoder replaces src's
                                                           #   (None: src's)
    note: str = ""                                         # free text kept in SOURCE.json (e.g. the command)


def same_encoder(a: Autoencoder, b: Autoencoder) -> bool:
    """Whether two autoencoders encode alike: the same encoder weights and latent scale, up to storage rounding."""
    ours, theirs = a.encoder_state(), b.encoder_state()
    return ours.keys() == theirs.keys() and all(
        ours[k].shape == theirs[k].shape and torch.allclose(ours[k], theirs[k], rtol=ENCODER_RTOL, atol=ENCODER_ATOL)
        for k in ours)


def swap_autoencoder(model: checkpoint.WorldModel, path: str) -> checkpoint.WorldModel:
    """`model` with the autoencoder of checkpoint `path`; refused unless that one encodes as model's does."""
    other = checkpoint.load(path)
    if not same_encoder(model.autoencoder, other.autoencoder):
        raise ValueError(f"{path}: its encoder or latent scale is not the source's, so the DiT's latents would not "
                         "decode; train its decoder with train.stages.decoder from the source's autoencoder")
    config = dataclasses.replace(model.config, autoencoder=other.config.autoencoder)
    return dataclasses.replace(model, config=config, autoencoder=other.autoencoder)


def bundle(cfg: BundleConfig) -> Path:
    if cfg.weights_dtype not in DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(DTYPES)}, got {cfg.weights_dtype!r}")
    model = checkpoint.load(cfg.src)
    if model.start_frames is None or model.dit is None:
        raise ValueError(f"{cfg.src} needs a DiT and a start bank to be an env's default checkpoint")
    if cfg.autoencoder is not None:
        model = swap_autoencoder(model, cfg.autoencoder)
    path = checkpoint.save(cfg.dst, model.config, model.autoencoder, model.dit, model.start_frames[:cfg.bank],
                           model.start_actions[:cfg.bank], weights_dtype=DTYPES[cfg.weights_dtype])
    source = {"source": str(cfg.src), "stage": model.config.stage, "weights_dtype": cfg.weights_dtype,
              "bank": int(min(cfg.bank, len(model.start_frames))), "autoencoder": cfg.autoencoder, "note": cfg.note}
    (path / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n")
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    print(f"bundled {cfg.src} ({model.config.stage}) -> {path} ({size:.1f} MiB)")
    return path


if __name__ == "__main__":
    hydra_main("bundle", BundleConfig, bundle)
