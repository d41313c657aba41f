"""Sampled entity events: where each randomly moving entity is in the next frame, drawn before the pixels.

A game's random choices (where a randomly moving entity steps, where an entity respawns) make the next frame
multimodal. A few-step diffusion student then paints the mean over the choices — a faint entity
over several cells, one in two places — and more training did not fix it
(docs/ablation.md "The random entities"), while the player, whose motion is deterministic given the keys, was
already exact. So the world model factors each transition as p(frame | events, past) p(events | past, action):

- `EventModel` (this file) is the categorical prior: from the previous latent frame and the action
  it gives, per random entity, logits over the latent cells where the entity will be.
- The DiT takes the sampled cells as one-hot input channels of the frame being generated
  (`DiTConfig.event_channels`), so, given them, the next frame is deterministic again.

Labels come from real frames (a game-specific reader, `train.common.events`); the event model is
trained with cross-entropy beside the flow loss. Sampling uses the rollout's Gaussian noise source
(Gumbel-max through the normal CDF), so a seeded rollout stays reproducible.

Dimensions: B batch, E entities, C latent channels, h = w latent size, K = h*w cells.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from worldmodel.files import load_weights

EVENT_MODEL_FILE = "event_model.safetensors"
EVENT_CONFIG_FILE = "event_model.json"


@dataclass
class EventModelConfig:
    """Shapes of an event model (a DiT with `event_channels` builds its own from its DiTConfig)."""
    latent_channels: int
    latent_size: int
    n_actions: int
    entities: int
    dim: int = 64
    depth: int = 3
    outcomes: bool = False          # also the transition's reward and termination, given the drawn cells
    player: bool = False            # also logits over the player's next cell (deterministic given the keys)
    none: bool = False              # each entity may also be drawn nowhere: cell index K, an all-zero map (a learned
                                    #   code on a step where nothing random happens, train.stages.codes)
    reach: list[int] = field(default_factory=list)   # per entity, then the player: the most cells it moved in one
                                    #   recorded frame, -1 = anywhere (observed_reach; installed as
                                    #   DiTConfig.event_reach)


class EventModel(nn.Module):
    """(previous latent (B, C, h, w), action (B,)) -> logits (B, E, K) over the cells of each random entity.

    A conv stem over the previous frame and the action's one-hot channels gives each cell its
    neighbourhood (where an entity can be one frame later is next to where it is: a local rule, as in
    the DiT's stem), then a small transformer over the K cell tokens (a learned cell table and the
    action added to every token) carries what is global: an entity that chases the player needs the
    player's cell, anywhere in the frame; one that respawns when the player reaches it needs both. Without
    the stem the same transformer kept putting an entity on cells it cannot reach
    (docs/ablation.md "The fix: draw the entities first (the event model)")."""

    def __init__(self, latent_channels: int, latent_size: int, n_actions: int, entities: int,
                 dim: int = 64, depth: int = 3, heads: int = 4, outcomes: bool = False, player: bool = False,
                 none: bool = False):
        super().__init__()
        self.entities = entities
        self.n_actions = n_actions
        cells = latent_size * latent_size
        self.stem = nn.Sequential(nn.Conv2d(latent_channels + n_actions + 1, dim, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(dim, dim, 3, padding=1), nn.GELU())
        self.cell_pos = nn.Parameter(torch.randn(1, cells, dim) * 0.02)
        self.action_embed = nn.Embedding(n_actions + 1, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, entities)
        # outcomes: per cell, its features and the drawn entities there -> pooled -> (reward, termination logit)
        self.outcome = (nn.Sequential(nn.Linear(dim + entities, dim), nn.GELU(), nn.Linear(dim, dim))
                        if outcomes else None)
        self.outcome_out = nn.Linear(2 * dim, 2) if outcomes else None
        self.player = nn.Linear(dim, 1) if player else None      # per cell: the player's next cell
        self.none = nn.Linear(dim, entities) if none else None   # pooled cells: each entity's "nowhere" logit

    @classmethod
    def from_config(cls, config: EventModelConfig) -> EventModel:
        return cls(config.latent_channels, config.latent_size, config.n_actions, config.entities, config.dim,
                   config.depth, outcomes=config.outcomes, player=config.player, none=config.none)

    def forward(self, previous: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.cell_logits(self.tokens(previous, actions))

    def cell_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, dim) cell tokens -> (B, E, K) logits over the cells of each entity; (B, E, K + 1) with `none`, the
        last the entity's "nowhere" (index K)."""
        logits = self.out(tokens).transpose(1, 2).float()
        if self.none is None:
            return logits
        return torch.cat([logits, self.none(tokens.mean(1)).float()[..., None]], dim=-1)

    def player_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, dim) cell tokens -> (B, K) logits over the player's next cell."""
        if self.player is None:
            raise ValueError("this event model has no player head (player=False)")
        return self.player(tokens)[..., 0].float()

    def outcome_logits(self, tokens: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """The transition's (reward, termination logit) (B, 2), given where the entities were drawn: maps (B, E, h, w).

        E.g. a reward for reaching a cell is fixed by the previous frame and the key; whether a drawn entity ends
        the episode, by its drawn cell too."""
        if self.outcome is None:
            raise ValueError("this event model has no outcome head (outcomes=False)")
        h = self.outcome(torch.cat([tokens, maps.flatten(2).transpose(1, 2).to(tokens.dtype)], dim=-1))   # (B, K, dim)
        return self.outcome_out(torch.cat([h.mean(1), h.amax(1)], dim=-1)).float()

    def tokens(self, previous: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) previous latent, (B,) actions -> (B, K, dim) cell tokens."""
        previous = previous.to(self.cell_pos.dtype)
        onehot = one_hot(actions, self.n_actions + 1, previous.dtype)[..., None, None]          # (B, A+1, 1, 1)
        stem_in = torch.cat([previous, onehot.expand(-1, -1, *previous.shape[-2:])], dim=1)
        tokens = self.stem(stem_in).flatten(2).transpose(1, 2)                                 # (B, K, dim)
        tokens = tokens + self.cell_pos + self.action_embed(actions)[:, None]
        return self.norm(self.encoder(tokens))                                                # (B, K, dim)


def save_event_model(directory: Path, model: EventModel, config: EventModelConfig) -> None:
    """directory/event_model.safetensors + event_model.json (the train.stages.events checkpoint)."""
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(Path(directory) / EVENT_MODEL_FILE))
    (Path(directory) / EVENT_CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))


def read_event_config(directory: str | Path) -> EventModelConfig:
    file = Path(directory) / EVENT_CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no event model in {directory} (missing {EVENT_CONFIG_FILE}); train one with "
                                "python -m train.stages.events")
    return EventModelConfig(**json.loads(file.read_text()))


def load_event_model(directory: str | Path) -> EventModel:
    """The event model a train.stages.events run wrote to `directory`."""

    model = EventModel.from_config(read_event_config(directory))
    load_weights(model, Path(directory) / EVENT_MODEL_FILE)
    return model


def event_loss(logits: torch.Tensor, cells: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of logits (N, E, K) against the true cells (N, E) int64, mean over entities and (weighted) rows."""
    per_row = F.cross_entropy(logits.flatten(0, 1), cells.flatten(),
                              reduction="none").view(cells.shape).mean(-1)   # (N,)
    if weight is None:
        return per_row.mean()
    return (per_row * weight).sum() / weight.sum().clamp_min(1.0)


def sample_cells(logits: torch.Tensor, gaussian: torch.Tensor, min_prob: float = 0.0) -> torch.Tensor:
    """Draw one cell per entity from logits (B, E, K) with standard-normal noise of the same shape -> (B, E) int64.

    Gumbel-max, with the uniforms made from the Gaussian noise through the normal CDF. Cells below
    `min_prob` are never drawn (a truncation like top-p: thousands of frames of a tiny leak of mass
    onto far cells would be enemies that jump); the most likely cell always stays drawable."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    if min_prob > 0.0:
        keep = (log_p >= math.log(min_prob)) | (log_p == log_p.amax(dim=-1, keepdim=True))
        log_p = log_p.masked_fill(~keep, float("-inf"))
    uniform = (0.5 * (1.0 + torch.erf(gaussian.float() / math.sqrt(2.0)))).clamp(1e-7, 1.0 - 1e-7)
    return (log_p - torch.log(-torch.log(uniform))).argmax(dim=-1)


def reachable(last: torch.Tensor, reach: torch.Tensor, latent_size: int) -> torch.Tensor:
    """Which cells each drawn entity may land on: last (B, R) int64 its last drawn cells (-1 unknown: after a reset;
    K = h * w: drawn nowhere, as unknown), reach (R,) int64 the most cells (Manhattan) it moves in a frame (-1
    anywhere), on last's device -> (B, R, K) bool. Its last cell is always allowed, so no row is left without a cell.
    Device ops only (no host copy: a CUDA graph can capture it)."""
    k = torch.arange(latent_size * latent_size, device=last.device)
    rows, cols = k // latent_size, k % latent_size                                               # (K,)
    distance = ((rows - (last // latent_size)[..., None]).abs()
                + (cols - (last % latent_size)[..., None]).abs())                                # (B, R, K)
    limit = reach[None, :, None]                                                                 # (1, R, 1)
    return (distance <= limit) | (limit < 0) | ((last < 0) | (last >= len(k)))[..., None]


def observed_reach(cells: list[np.ndarray], latent_size: int, anywhere: int) -> list[int]:
    """Per column of the recorded cells (each array (T, R) int64 one episode's cells, -1 or h * w unseen): the most
    cells (Manhattan) it moved between two consecutive frames where it was seen; -1 (anywhere) where that is more than
    `anywhere` (an entity that respawns) or where it was never seen in two frames in a row."""
    most = np.full(cells[0].shape[1], -1, np.int64)
    for episode in cells:
        before, after = episode[:-1], episode[1:]
        seen = (before >= 0) & (after >= 0) & (before < latent_size ** 2) & (after < latent_size ** 2)
        moved = (np.abs(before // latent_size - after // latent_size)
                 + np.abs(before % latent_size - after % latent_size))
        most = np.maximum(most, np.where(seen, moved, -1).max(0, initial=-1))
    return [int(m) if 0 <= m <= anywhere else -1 for m in most]


def one_hot(index: torch.Tensor, classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(...) int64 -> (...) x classes one-hot in `dtype`. Unlike F.one_hot it does not check the range on the
    host (a device-to-host sync on CUDA, which a CUDA graph cannot capture): an index outside [0, classes)
    gives an all-zero row."""
    return (index[..., None] == torch.arange(classes, device=index.device)).to(dtype)


def cell_maps(cells: torch.Tensor, latent_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot maps of entity cells: (..., E) int64 flat cell indices -> (..., E, h, w)."""
    return one_hot(cells, latent_size * latent_size, dtype).unflatten(-1, (latent_size, latent_size))
