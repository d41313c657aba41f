"""The state probe's network: a small conv net that reads the player cell and the score from any CoinChase frame.

`Probe.read(frames)` turns generated frames into game state (what train.eval reads frames with when
given `probe=<dir>`); `save_probe` / `load_probe` store it as safetensors + JSON (no pickle). It is
trained by train.probe.run (`python -m train.probe`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from envs.coinchase import CELLS, SCORE_DIGITS
from worldmodel.checkpoint import write_dir_atomically


class Probe(nn.Module):
    """(N, 64, 64, 3) uint8 -> player-cell logits (N, CELLS*CELLS) and score-digit logits (N, SCORE_DIGITS, 10)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.body = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.SiLU(),
                                  nn.Conv2d(width, 2 * width, 4, 2, 1), nn.SiLU(),
                                  nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.SiLU())        # (N, 2w, 8, 8)
        self.player = nn.Conv2d(2 * width, 1, 1)                                              # a logit per cell
        self.score = nn.Linear(2 * width * CELLS, SCORE_DIGITS * 10)                          # reads the top row

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h = self.body(x)
        return self.player(h).flatten(1), self.score(h[:, :, 0].flatten(1)).view(-1, SCORE_DIGITS, 10)

    @torch.no_grad()
    def read(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Player (N, 2) (row, col) and score (N,) read from uint8 frames (N, 64, 64, 3)."""
        cell_logits, digit_logits = self(torch.from_numpy(np.ascontiguousarray(frames)))
        cell = cell_logits.argmax(1).numpy()
        digits = digit_logits.argmax(2).numpy()                             # (N, D) most significant first
        score = (digits * 10 ** np.arange(SCORE_DIGITS - 1, -1, -1)).sum(1)
        return np.stack([cell // CELLS, cell % CELLS], 1), score


def save_probe(probe: Probe, path: str | Path, metrics: dict[str, float]) -> Path:
    def fill(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(tmp / "probe.safetensors"))
        (tmp / "probe.json").write_text(json.dumps({"width": probe.width, "held_out": metrics}, indent=2))
    return write_dir_atomically(path, fill)


def load_probe(path: str | Path) -> Probe:
    path = Path(path)
    if not (path / "probe.json").is_file():
        raise FileNotFoundError(f"{path / 'probe.json'}: missing; train one with `python -m train.probe out={path}`")
    probe = Probe(int(json.loads((path / "probe.json").read_text())["width"]))
    probe.load_state_dict(load_file(str(path / "probe.safetensors")))
    return probe.eval()
