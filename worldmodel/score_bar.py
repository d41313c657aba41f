"""The displayed score as explicit state: a learned painter and reader of the score bar's latent rows.

Measured (docs/ablation.md, sessions 8-9): the DiT paints the score bar's latents 0.31 from every
real digit, farther than the encoder keeps the digits from each other (0.11-0.3), so the dreamed score
flickers and misreads in ~35 % of frames even through a decoder that draws every real digit. A
generative model is the wrong tool for a counter. The bar shows the episode's return so far, so the
world model carries it as state, the way the event model carries where the random entities go:

    score_t = read(previous latent) + round(reward_t);   frame_t's bar rows = paint(score_t)

- `paint`: digits (one-hot each) -> the latent rows of the bar, regressed on the encoder's latents
  of real frames (the bar's look is fixed by the score; the rest of the frame does not enter).
- `read`: the bar's latent rows -> each digit's class, trained on real latents (so a real start frame
  reads right) and on painted ones (so a dreamed frame reads back exactly what was painted).

Labels need no game reader: a frame's score is the sum of the episode's rewards before it (the
train.stages.score_bar stage). Both are small MLPs, frozen inside the DiT (`DiTConfig.score_digits`).

Dimensions: B batch, C latent channels, R bar rows, w latent width, D digits.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from worldmodel.events import one_hot

SCORE_BAR_FILE = "score_bar.safetensors"
SCORE_CONFIG_FILE = "score_bar.json"


class ScoreBar(nn.Module):
    """Paint a score into the top `rows` latent rows, and read it back; scores are taken modulo 10**digits."""

    def __init__(self, latent_channels: int, latent_size: int, digits: int, rows: int = 1, dim: int = 128):
        super().__init__()
        if digits < 1 or not 0 < rows < latent_size:
            raise ValueError(f"a score bar needs digits >= 1 and 0 < rows < latent_size, got digits={digits} rows={rows}")
        self.digits, self.rows = digits, rows
        self.bar_shape = (latent_channels, rows, latent_size)
        flat = latent_channels * rows * latent_size
        self.painter = nn.Sequential(nn.Linear(10 * digits, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(),
                                     nn.Linear(dim, flat))
        self.reader = nn.Sequential(nn.Linear(flat, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(),
                                    nn.Linear(dim, 10 * digits))
        self.register_buffer("place", 10 ** torch.arange(digits - 1, -1, -1), persistent=False)   # (D,) 100, 10, 1

    @property
    def modulus(self) -> int:
        return 10 ** self.digits

    def to_digits(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) int64 scores -> (B, D) digits, most significant first (modulo 10**D, as the bar shows it)."""
        return torch.div(score.remainder(self.modulus)[:, None], self.place, rounding_mode="floor").remainder(10)

    def bar(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) int64 -> the bar's latent rows (B, C, R, w)."""
        code = one_hot(self.to_digits(score), 10, self.painter[0].weight.dtype).flatten(1)     # (B, 10 D)
        return self.painter(code).view(-1, *self.bar_shape)

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

    def advance(self, previous: torch.Tensor, frame: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """The next frame (B, C, h, w) with the bar showing the previous frame's score plus the step's reward (B,),
        rounded as the env rounds it."""
        score = self.read(previous) + torch.round(reward.float()).long()
        return self.paint(frame, score)


@dataclass
class ScoreBarConfig:
    """Shapes of a score bar (the train.stages.score_bar checkpoint; a DiT copies them into its DiTConfig)."""
    latent_channels: int
    latent_size: int
    digits: int = 3
    rows: int = 1
    dim: int = 128

    def build(self) -> ScoreBar:
        return ScoreBar(self.latent_channels, self.latent_size, self.digits, self.rows, self.dim)


def save_score_bar(directory: Path, bar: ScoreBar, config: ScoreBarConfig) -> None:
    """directory/score_bar.safetensors + score_bar.json."""
    save_file({k: v.detach().contiguous() for k, v in bar.state_dict().items()}, str(Path(directory) / SCORE_BAR_FILE))
    (Path(directory) / SCORE_CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))


def load_score_bar(directory: str | Path) -> tuple[ScoreBar, ScoreBarConfig]:
    """The score bar a train.stages.score_bar run wrote to `directory`."""
    from worldmodel.checkpoint import load_weights  # noqa: PLC0415  (checkpoint imports the DiT, which imports this)

    file = Path(directory) / SCORE_CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no score bar in {directory} (missing {SCORE_CONFIG_FILE}); train one with "
                                "python -m train.stages.score_bar")
    config = ScoreBarConfig(**json.loads(file.read_text()))
    bar = config.build()
    load_weights(bar, Path(directory) / SCORE_BAR_FILE)
    return bar, config
