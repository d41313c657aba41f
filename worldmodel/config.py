"""Configuration dataclasses of the world model: one typed place for every model knob.

Owns `AutoencoderConfig`, `DiTConfig`, `SamplerConfig` and the size presets. Hydra fills these
(structured configs); checkpoints store them as JSON. No torch import here.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, fields
from typing import Any


DECODERS = ("conv", "cell")          # AutoencoderConfig.decoder: the decoder architectures


@dataclass
class AutoencoderConfig:
    """Conv autoencoder frames (H, W, 3) uint8 <-> latents (latent_channels, H/8, W/8)."""
    frame_size: int = 64            # square frames, pixels
    latent_channels: int = 8
    widths: tuple[int, ...] = (32, 64, 128)  # conv widths at 1/2, 1/4, 1/8 resolution (the encoder; the conv decoder)
    downsample_levels: int = 3      # 2**levels = pixels per latent cell
    decoder: str = "conv"           # "conv": transposed convs back up through `widths`; "cell": convs at latent
                                    #   resolution, then each latent cell's features become its own block of pixels
    cell_width: int = 64            # "cell" decoder: conv width at latent resolution
    cell_blocks: int = 1            # "cell" decoder: residual blocks (two 3x3 convs each) at latent resolution

    @property
    def latent_size(self) -> int:
        return self.frame_size // 2 ** self.downsample_levels

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        if len(self.widths) != self.downsample_levels:
            raise ValueError(f"widths {self.widths} must have one entry per downsample level "
                             f"({self.downsample_levels})")
        if self.frame_size % 2 ** self.downsample_levels:
            raise ValueError(f"frame_size {self.frame_size} is not divisible by 2**{self.downsample_levels}")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown autoencoder decoder {self.decoder!r}; choose from {DECODERS}")
        if self.cell_width < 1 or self.cell_blocks < 0:
            raise ValueError(f"cell_width must be >= 1 and cell_blocks >= 0, "
                             f"got {self.cell_width} and {self.cell_blocks}")


@dataclass
class DiTConfig:
    """Action-conditioned DiT over latent frames; tokens = patches of each frame."""
    latent_channels: int = 8
    latent_size: int = 8            # latent frames are latent_size x latent_size
    patch: int = 2                  # tokens per frame = (latent_size / patch)**2
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    n_actions: int = 5              # real actions; id n_actions is the null action (start / CFG dropout)
    causal: bool = True             # block-causal (student, TF, DF) or bidirectional (teacher, critic)
    chunk: int = 1                  # frames per causal block (1 = frame-wise, 3 as in the paper)
    window: int = 7                 # frames of context kept in the KV cache (rolling)
    sink: int = 0                   # first frames of an episode kept in the cache forever
    rope_base: float = 100.0        # rotary base over time positions (positions are < window + chunk)
    spatial_rope: bool = True       # rotary also over token row and column (a quarter of the pairs each)
    spatial_rope_base: float = 10.0 # rotary base over rows / columns (positions are < latent_size / patch)
    previous_frame: bool = True     # each frame's input also holds the frame before it at the same place
    stem_width: int = 64            # conv stem / output head width at latent resolution (0: linear patches only)
    action_channels: bool = True    # the action as one-hot input channels of the stem (a path that cannot drown)
    event_channels: int = 0         # random entities whose next cell is sampled first (worldmodel.events) and given
                                    #   to the generated frame as one-hot stem channels; 0 = none
    event_dim: int = 64             # width of the event model (a small transformer over the latent cells)
    event_depth: int = 3
    event_outcomes: bool = False    # the event model also gives each step's reward and termination (given its draw);
                                    #   the rollout then reports those instead of the clean pass's heads
    event_player: bool = False      # the event model also says where the player (moved by the keys) will be
    event_none: bool = False        # an entity may be drawn nowhere (cell index K, an all-zero event map)
    player_channel: bool = False    # with event_player: the player's next cell (the event model's player head, argmax)
                                    #   is one more event channel after the entities, so every generated frame is told
                                    #   where the player is (docs/model.md "Player channel")
    event_reach: list[int] = field(default_factory=list)   # per drawn cell (entities, then the player): the most
                                    #   latent cells (Manhattan) it moves in one frame, -1 = anywhere (a respawn);
                                    #   a cell further from the row's last drawn one is never drawn (observed on the
                                    #   recording by the events stage). Empty = no limit
    overlap_paint: bool = False     # where two drawn cells coincide, the generated cell is set to that pair's latent
                                    #   (DiT.overlap_latents, fitted to the decoder on recorded overlaps): two sprites
                                    #   in one cell are a blend no DiT drew (docs/model.md "Overlap paint")
    score_digits: int = 0           # digits of the score bar carried as explicit state (worldmodel.score_bar): each
                                    #   generated frame's bar rows are painted with the previous frame's score plus
                                    #   the step's reward; 0 = the DiT draws the bar like any pixels
    score_rows: int = 1             # latent rows from the top that hold the score bar
    score_dim: int = 128            # width of the score bar's painter / reader MLPs
    score_pixels: int = 0           # pixel rows of the bar the score bar draws itself (0: the decoder draws them)

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_size // self.patch) ** 2

    @property
    def drawn_cells(self) -> int:
        """The cells drawn before each frame, one event channel each: the random entities, then the player
        (player_channel)."""
        return self.event_channels + self.player_channel

    @property
    def entity_pairs(self) -> list[tuple[int, int]]:
        """The pairs of drawn cells (i < j) whose overlap cell `overlap_paint` paints, in DiT.overlap_latents' order."""
        return list(itertools.combinations(range(self.drawn_cells), 2))

    @property
    def max_position(self) -> int:
        """Largest time position any forward uses: sink + window of cached frames + one chunk."""
        return self.sink + self.window + self.chunk - 1

    def __post_init__(self) -> None:
        if self.latent_size % self.patch:
            raise ValueError(f"latent_size {self.latent_size} is not divisible by patch {self.patch}")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.heads} heads of even size")
        if (self.previous_frame or self.action_channels or self.event_channels) and not self.stem_width:
            raise ValueError("previous_frame, action_channels and event_channels feed the conv stem: "
                             "set stem_width > 0")
        if self.event_channels and not self.previous_frame:
            raise ValueError("event_channels: the event model reads the previous frame; set previous_frame")
        if self.event_reach and len(self.event_reach) != self.drawn_cells:
            raise ValueError(f"event_reach {self.event_reach} needs one entry per drawn cell ({self.drawn_cells})")
        if self.player_channel and not self.event_player:
            raise ValueError("player_channel: the player's cell comes from the event model's player head; install an "
                             "event model with one (event_player)")
        if self.overlap_paint and self.drawn_cells < 2:
            raise ValueError("overlap_paint paints where two drawn cells coincide: it needs two (event_channels + "
                             "player_channel >= 2)")
        if self.spatial_rope and (self.dim // self.heads) // 2 < 4:
            raise ValueError(f"spatial_rope needs at least 4 rotary pairs per head, "
                             f"got head size {self.dim // self.heads}")
        if self.score_digits and not self.event_outcomes:
            raise ValueError("score_digits: the bar's score rises by the step's reward, which must be known before the "
                             "frame is written; install an event model with outcomes (event_outcomes)")
        if self.window < self.chunk:
            raise ValueError(f"window ({self.window} frames) must hold at least one chunk ({self.chunk})")


@dataclass
class SamplerConfig:
    """Few-step flow sampler: sigmas from evenly spaced timesteps warped by `shift`."""
    steps: int = 4                  # denoising steps per frame at run time, 1..max_steps
    max_steps: int = 4              # the schedule the student is trained on
    shift: float = 5.0              # sigma = shift*t / (1 + (shift-1)*t)
    event_min_prob: float = 0.01    # sampled entity cells below this probability are never drawn (worldmodel.events)


def dataclass_from_dict(cls, data: dict[str, Any]):
    """Build dataclass `cls` from a JSON dict; unknown keys are an error naming them."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} got unknown keys {sorted(unknown)}; known: {sorted(names)}")
    return cls(**data)


def to_dict(config) -> dict[str, Any]:
    out = asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=32, depth=2, heads=2),
    "small": dict(dim=128, depth=4, heads=4),
    "base": dict(dim=256, depth=8, heads=8),
}


def dit_preset(name: str, **overrides: Any) -> DiTConfig:
    """A DiTConfig of a named size ("tiny" for tests, "small" for CPU, "base" for a GPU)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model size {name!r}; choose from {sorted(PRESETS)}")
    return DiTConfig(**{**PRESETS[name], **overrides})


@dataclass
class WorldModelConfig:
    """Everything a checkpoint needs to rebuild the model."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    latent_scale: float = 1.0       # latents are divided by this to have unit variance
    stage: str = "untrained"        # which training stage produced the weights
    env_id: str = ""                # the Gymnasium id of the real game the model was trained on ("" = unknown)
