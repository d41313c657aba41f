"""The displayed score as explicit state: a learned painter and reader of the score bar's latent rows.

The DiT paints the score bar's latents farther from every real digit than the encoder keeps the
digits from each other, so the dreamed score flickers and misreads even through a decoder that draws
every real digit (docs/ablation.md "The score as state (the score bar)"). A generative model is the
wrong tool for a counter. The bar shows the episode's return so far, so the
world model carries it as state, the way the event model carries where the random entities go:

    score_t = read(previous latent) + round(reward_t);   frame_t's bar rows = paint(score_t)

- `paint`: digits (one-hot each) -> the latent rows of the bar, regressed on the encoder's latents
  of real frames (the bar's look is fixed by the score; the rest of the frame does not enter).
- `read`: the bar's latent rows -> each digit's class, trained on real latents (so a real start frame
  reads right) and on painted ones (so a dreamed frame reads back exactly what was painted).
- `draw` (with `bar_pixels`): digits -> the bar's pixels, regressed on real frames' bars, replacing
  what the decoder draws there: no decoder drew every score from the encoder's latents, where the
  digits lie close together (docs/ablation.md "The glyphs"), while the bar is a deterministic function
  of the score, which a regression learns exactly.

Labels need no game reader: a frame's score is the sum of the episode's rewards before it (the
train.stages.score_bar stage). All three are small MLPs, frozen inside the DiT (`DiTConfig.score_digits`).

Dimensions: B batch, C latent channels, R bar rows, w latent width, D digits, P bar pixel rows, W frame width.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from worldmodel.autoencoder import Autoencoder
from worldmodel.events import one_hot
from worldmodel.files import load_weights

SCORE_BAR_FILE = "score_bar.safetensors"
SCORE_CONFIG_FILE = "score_bar.json"


class ScoreBar(nn.Module):
    """Paint a score into the top `rows` latent rows, read it back, and (bar_pixels > 0) draw its top `bar_pixels`
    pixel rows; scores are taken modulo 10**digits."""

    def __init__(self, latent_channels: int, latent_size: int, digits: int, rows: int = 1, dim: int = 128,
                 bar_pixels: int = 0):
        super().__init__()
        if digits < 1 or not 0 < rows < latent_size:
            raise ValueError(f"a score bar needs digits >= 1 and 0 < rows < latent_size, "
                             f"got digits={digits} rows={rows}")
        if bar_pixels % rows:
            raise ValueError(f"bar_pixels ({bar_pixels}) must be whole latent rows ({rows} rows)")
        self.digits, self.rows, self.bar_pixels = digits, rows, bar_pixels
        self.bar_shape = (latent_channels, rows, latent_size)
        self.pixel_shape = (3, bar_pixels, latent_size * bar_pixels // rows)                     # (3, P, W)
        flat = latent_channels * rows * latent_size
        self.painter = mlp(10 * digits, dim, flat)
        self.reader = mlp(flat, dim, 10 * digits)
        self.glyphs = mlp(10 * digits, dim, 3 * bar_pixels * self.pixel_shape[2]) if bar_pixels else None
        self.register_buffer("place", 10 ** torch.arange(digits - 1, -1, -1), persistent=False)   # (D,) 100, 10, 1

    @property
    def modulus(self) -> int:
        return 10 ** self.digits

    def to_digits(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) int64 scores -> (B, D) digits, most significant first (modulo 10**D, as the bar shows it)."""
        return torch.div(score.remainder(self.modulus)[:, None], self.place, rounding_mode="floor").remainder(10)

    def code(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> (B, 10 D) the digits one-hot."""
        return one_hot(self.to_digits(score), 10, self.painter[0].weight.dtype).flatten(1)

    def bar(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> the bar's latent rows (B, C, R, w)."""
        return self.painter(self.code(score)).view(-1, *self.bar_shape)

    def bar_image(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> the bar's pixels (B, 3, P, W), float in [-1, 1] as the decoder draws."""
        if self.glyphs is None:
            raise ValueError("this score bar draws no pixels (bar_pixels=0): the decoder draws the bar")
        return self.glyphs(self.code(score)).view(-1, *self.pixel_shape)

    def digit_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latent frames -> (B, D, 10) logits of each digit of the bar they show."""
        rows = latents[:, :, :self.rows].flatten(1).to(self.reader[0].weight.dtype)             # (B, C R w)
        return self.reader(rows).view(-1, self.digits, 10)

    def read(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B,) int64 score shown in the bar."""
        return (self.digit_logits(latents).argmax(-1) * self.place).sum(-1)

    def paint(self, latents: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) frames with their bar rows replaced by `score`'s (B,) (the rest keeps its gradient)."""
        return torch.cat([self.bar(score).to(latents.dtype), latents[:, :, self.rows:]], dim=2)

    def draw(self, frames: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 decoded frames with their top bar_pixels rows drawn from `score` (B,)."""
        return torch.cat([Autoencoder.to_uint8(self.bar_image(score)), frames[:, self.bar_pixels:]], dim=1)

    def next_score(self, previous: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """(B,) the score of the frame after `previous` (B, C, h, w): the score it shows plus the step's reward (B,),
        rounded as the env rounds it."""
        return self.read(previous) + torch.round(reward.float()).long()


def mlp(inputs: int, width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                         nn.Linear(width, outputs))


@dataclass
class ScoreBarConfig:
    """Shapes of a score bar (the train.stages.score_bar checkpoint; a DiT copies them into its DiTConfig)."""
    latent_channels: int
    latent_size: int
    digits: int = 3
    rows: int = 1
    dim: int = 128
    bar_pixels: int = 0       # pixel rows the bar draws itself (0: the decoder draws them)

    def build(self) -> ScoreBar:
        return ScoreBar(self.latent_channels, self.latent_size, self.digits, self.rows, self.dim, self.bar_pixels)


def save_score_bar(directory: Path, bar: ScoreBar, config: ScoreBarConfig) -> None:
    """directory/score_bar.safetensors + score_bar.json."""
    save_file({k: v.detach().contiguous() for k, v in bar.state_dict().items()}, str(Path(directory) / SCORE_BAR_FILE))
    (Path(directory) / SCORE_CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))


def load_score_bar(directory: str | Path) -> tuple[ScoreBar, ScoreBarConfig]:
    """The score bar a train.stages.score_bar run wrote to `directory`."""

    file = Path(directory) / SCORE_CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no score bar in {directory} (missing {SCORE_CONFIG_FILE}); train one with "
                                "python -m train.stages.score_bar")
    config = ScoreBarConfig(**json.loads(file.read_text()))
    bar = config.build()
    load_weights(bar, Path(directory) / SCORE_BAR_FILE)
    return bar, config
