"""The action-conditioned diffusion transformer over latent frames (teacher, students, critic).

Owns: patch embedding, per-frame conditioning (noise level + action) through adaLN-Zero, attention
over (frames x tokens) with frame-level masks and an optional KV cache, rotary time positions,
the velocity output and the reward / termination heads, and (with `event_channels`) the one-hot
entity-event input channels and the event model that draws them (`worldmodel.events`), and (with
`score_digits`) the score bar carried as state (`worldmodel.score_bar`). Knows no env, trainer or screen.

Dimensions: B batch, T frames in this forward, N tokens per frame, D model width, H heads,
Dh head width, C latent channels, h = w latent size, F cache frame slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel import kernels
from worldmodel.blocks import CacheAccess, FrameAdaLNBlock, attention_plan, modulate_frames
from worldmodel.config import DiTConfig
from worldmodel.events import EventModel, cell_maps, one_hot, reachable, sample_cells
from worldmodel.masks import previous_frames
from worldmodel.score_bar import ScoreBar


@dataclass
class DiTOutput:
    velocity: torch.Tensor     # (B, T, C, h, w) predicted eps - x0
    reward: torch.Tensor       # (B, T) predicted reward on entering each frame
    termination: torch.Tensor  # (B, T) logit that the episode ended on entering each frame
    features: torch.Tensor     # (B, T, D) pooled final hidden state per frame (heads, discriminators)


class NoiseEmbedding(nn.Module):
    """sigma in [0, 1] -> sinusoidal features -> MLP -> (D,)."""

    def __init__(self, dim: int, features: int = 128):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.features // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
        angles = (sigma.float() * 1000.0)[..., None] * freqs                # (B, T, half)
        features = torch.cat([angles.cos(), angles.sin()], dim=-1)           # (B, T, F) fp32
        return self.mlp(features.to(self.mlp[0].weight.dtype))               # (B, T, D) in the weights' dtype


class DiT(nn.Module):
    """Latent-frame diffusion transformer; causal (with KV cache) or bidirectional by its config.

    Input of frame i at latent resolution: its noisy latent, the frame before it at the same place
    (`previous_frame`) and its action as one-hot channels (`action_channels`), through a small conv
    stem, then patches -> tokens. The transformer's output tokens are unpatchified and joined with the
    stem's features in a conv head, so local rules (a sprite moves one cell where the key says, a wall
    blocks it) have a short path from input to output, and the attention handles what is global.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c, p, d, w = config.latent_channels, config.patch, config.dim, config.stem_width
        self.null_action = config.n_actions
        if w:
            stem_in = (c * (2 if config.previous_frame else 1) + (config.n_actions + 1 if config.action_channels else 0)
                       + config.drawn_cells)
            self.stem = nn.Sequential(nn.Conv2d(stem_in, w, 3, padding=1), nn.GELU(approximate="tanh"),
                                      nn.Conv2d(w, w, 3, padding=1), nn.GELU(approximate="tanh"))
            self.head = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.GELU(approximate="tanh"),
                                      nn.Conv2d(w, c, 3, padding=1))
        self.patch_embed = nn.Linear((w or c) * p * p, d)
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1, config.tokens_per_frame, d))
        side = config.latent_size // p
        self.register_buffer("token_cells", torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side),
                                                                       indexing="ij"), -1).reshape(-1, 2),
                             persistent=False)                                               # (N, 2) row, col
        self.noise_embed = NoiseEmbedding(d)
        self.action_embed = nn.Embedding(config.n_actions + 1, d)
        self.blocks = nn.ModuleList(FrameAdaLNBlock(d, config.heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, (w or c) * p * p)
        self.heads_norm = nn.LayerNorm(2 * d)
        # The DiT's own reward and termination heads: what a game without an event model reports. A model with
        # event_outcomes trains them too but reports the event model's outcomes instead (worldmodel.rollout).
        self.reward_head = nn.Linear(2 * d, 1)
        self.termination_head = nn.Linear(2 * d, 1)
        self.initialize_weights()
        self.event_model = (EventModel(c, config.latent_size, config.n_actions, config.event_channels, config.event_dim,
                                       config.event_depth, outcomes=config.event_outcomes, player=config.event_player,
                                       none=config.event_none)
                            if config.event_channels else None)
        # event_reach as a device tensor (not saved: the config holds it), read by sample_events
        self.register_buffer("reach", torch.tensor(config.event_reach, dtype=torch.int64), persistent=False)
        # (P, C) each pair's overlap latent, fitted to the decoder (installed); NaN: a pair never recorded in one
        # cell, not painted
        if config.overlap_paint:
            self.register_buffer("overlap_latents", torch.zeros(len(config.entity_pairs), c))
        # trained by its own stage only
        self.score_bar = (ScoreBar(c, config.latent_size, config.score_digits, config.score_rows, config.score_dim,
                                   config.score_pixels).requires_grad_(False) if config.score_digits else None)

    def initialize_weights(self) -> None:
        """Xavier linears; adaLN modulations and the velocity output start at zero (each block = identity).

        The action table starts at unit scale, like the noise embedding it is added to, so the keys are
        heard from the first step (a 0.02-scale table summed with a norm-13 noise embedding was not)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.spatial_pos, std=0.02)
        nn.init.normal_(self.action_embed.weight, std=1.0)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.ada_out[-1], self.velocity_layer):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def velocity_layer(self) -> nn.Module:
        """The last layer of the velocity path (zero at init)."""
        return self.head[-1] if self.config.stem_width else self.out

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.heads

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> (B, T, N, C*p*p)"""
        b, t, c, h, w = latents.shape
        p = self.config.patch
        x = latents.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, t, (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C*p*p) -> (B, T, C, h, w), any C"""
        b, t, n, cpp = tokens.shape
        p, side = self.config.patch, self.config.latent_size // self.config.patch
        c = cpp // (p * p)
        x = tokens.reshape(b, t, side, side, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, t, c, side * p, side * p)

    def stem_input(self, latents: torch.Tensor, actions: torch.Tensor, previous: torch.Tensor | None,
                   events: torch.Tensor | None) -> torch.Tensor:
        """Per-frame stem input at latent resolution: [latent | previous | one-hot action | events]. (B, T, C', h, w)"""
        parts = [latents]
        if self.config.previous_frame:
            parts.append(previous.to(latents.dtype))
        if self.config.action_channels:
            onehot = one_hot(actions, self.config.n_actions + 1, latents.dtype)                 # (B, T, A+1)
            parts.append(onehot[..., None, None].expand(*onehot.shape, *latents.shape[-2:]))
        if self.config.event_channels:
            parts.append(events.to(latents.dtype))
        return torch.cat(parts, dim=2)

    def frame_events(self, events: torch.Tensor | None, sigma: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """The event channels each frame sees (B, T, E, h, w): a frame being generated (sigma > 0) sees its sampled
        entity cells; a clean frame (sigma = 0: a context or cache write) sees none, its latent already shows them."""
        if not self.config.event_channels:
            return None
        b, t, _, h, w = shape
        if events is None:
            if bool((sigma > 0).any()):
                raise ValueError("this model generates frames given sampled entity events (event_channels="
                                 f"{self.config.event_channels}): pass events (B, T, E, h, w) for noisy frames")
            return torch.zeros(b, t, self.config.drawn_cells, h, w, device=sigma.device)
        if events.shape != (b, t, self.config.drawn_cells, h, w):
            raise ValueError(f"events {tuple(events.shape)} must be (B, T, E, h, w) = "
                             f"{(b, t, self.config.drawn_cells, h, w)}")
        return events * (sigma > 0).to(events.dtype)[..., None, None, None]

    @torch.no_grad()
    def sample_events(self, previous: torch.Tensor, actions: torch.Tensor, gaussian: torch.Tensor,
                      min_prob: float = 0.0, last: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Draw the next frame's entity cells. previous (B, C, h, w) the frame before, actions (B,), gaussian
        (B, E, K) standard-normal noise. Returns (cells (B, E') int64, one-hot maps (B, E', h, w), and with
        `event_outcomes` the step's (reward, termination logit) (B, 2) given the draw, else None). E' = E entities,
        then the player's cell (player_channel: the player head's most likely cell). last (B, drawn_cells): each
        row's previous draw (-1: none since a reset); with `event_reach`, cells out of reach of it are never drawn."""
        tokens = self.event_model.tokens(previous, actions)                                 # (B, K, D)
        allowed = None
        if self.config.event_reach and last is not None:
            allowed = reachable(last, self.reach, self.config.latent_size)                       # (B, drawn, K)
        logits = self.event_model.cell_logits(tokens)                                        # (B, E, K [+ 1])
        if allowed is not None:
            entities = allowed[:, :self.config.event_channels]
            if self.config.event_none:            # "nowhere" is always in reach
                entities = F.pad(entities, (0, 1), value=True)
            logits = logits.masked_fill(~entities, float("-inf"))
        cells = sample_cells(logits, gaussian, min_prob)
        maps = cell_maps(cells, self.config.latent_size, previous.dtype)
        outcomes = self.event_model.outcome_logits(tokens, maps) if self.config.event_outcomes else None
        if self.config.player_channel:
            player_logits = self.event_model.player_logits(tokens)                                # (B, K)
            if allowed is not None:
                player_logits = player_logits.masked_fill(~allowed[:, -1], float("-inf"))
            player = player_logits.argmax(-1)[:, None]                                           # (B, 1)
            cells = torch.cat([cells, player], dim=1)                                            # (B, E')
            maps = torch.cat([maps, cell_maps(player, self.config.latent_size, previous.dtype)], dim=1)
        return cells, maps, outcomes

    def paint(self, latents: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) generated frames painted where two drawn cells of `maps` (B, E', h, w) coincide: that pair's
        `overlap_latents` (overlap_paint; a NaN row, a pair never recorded in one cell, paints nothing)."""
        known = torch.isfinite(self.overlap_latents).all(-1).to(maps.dtype)                    # (P,) on the device
        for k, (i, j) in enumerate(self.config.entity_pairs):
            lit = maps[:, i] * maps[:, j] * known[k]                                             # (B, h, w)
            latents = torch.where(lit[:, None].to(torch.bool),
                                  self.overlap_latents[k].to(latents.dtype)[None, :, None, None], latents)
        return latents

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor,
                frame_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                cache: CacheAccess | None = None, previous: torch.Tensor | None = None,
                events: torch.Tensor | None = None) -> DiTOutput:
        """latents (B, T, C, h, w); sigma (B, T) in [0, 1]; actions (B, T) ids, null = n_actions.

        frame_mask (T, T) bool among this forward's frames (None = all see all);
        positions (T,) or (B, T) time positions (default 0..T-1); cache: read/write the KV cache;
        previous (B, T, C, h, w): the frame before each frame (default: the frame before it in `latents`,
        and before the first the cache's last frame, or zeros without a cache);
        events (B, T, E, h, w): one-hot cells of the sampled entities (needed for noisy frames when
        config.event_channels > 0; ignored on clean frames, see `frame_events`).
        """
        b, t = latents.shape[:2]
        if actions.shape != (b, t) or sigma.shape != (b, t):
            raise ValueError(f"actions {tuple(actions.shape)} and sigma {tuple(sigma.shape)} must be (B, T) = {(b, t)}")
        if positions is None:
            positions = torch.arange(t, device=latents.device)
        dtype = self.patch_embed.weight.dtype
        latents = latents.to(dtype)                                                 # run in the weights' dtype
        if self.config.previous_frame and previous is None:
            previous = previous_frames(latents, cache.previous if cache is not None else None)   # (B, T, C, h, w)
        stem = None
        if self.config.stem_width:
            frames_in = self.stem_input(latents, actions, previous, self.frame_events(events, sigma, latents.shape))
            stem = self.stem(frames_in.flatten(0, 1)).unflatten(0, (b, t))         # (B, T, W, h, w)
            tokens = self.patch_embed(self.patchify(stem))                          # (B, T, N, D)
        else:
            tokens = self.patch_embed(self.patchify(latents))
        tokens = tokens + self.spatial_pos
        n = tokens.shape[2]
        x = tokens.reshape(b, t * n, -1)                                            # (B, T*N, D)
        cond = self.noise_embed(sigma) + self.action_embed(actions)                 # (B, T, D)
        plan = cache.plan if cache is not None and cache.plan is not None and cache.plan.own.cos.dtype == x.dtype else \
            attention_plan(b, t, n, frame_mask, positions, cache,
                           self.token_cells if self.config.spatial_rope else None,
                           self.head_dim, self.config.rope_base, self.config.spatial_rope_base, x.dtype)
        if cache is not None:
            cache.plan = plan
        for layer, block in enumerate(self.blocks):
            x = block(x, cond, plan, cache, layer)
        per_token = x.view(b, t, n, -1)
        features = per_token.mean(dim=2)                                            # (B, T, D)
        shift, scale = self.ada_out(cond).chunk(2, dim=-1)
        if kernels.active(x):
            from worldmodel.kernels.adaln import norm_modulate  # noqa: PLC0415
            h = norm_modulate(x, shift, scale, self.norm_out.eps)                               # (B, T*N, D)
        else:
            h = modulate_frames(self.norm_out(x), shift, scale, t)
        out = self.unpatchify(self.out(h).view(b, t, n, -1))                        # (B, T, W or C, h, w)
        if stem is not None:
            out = self.head(torch.cat([out, stem], dim=2).flatten(0, 1)).unflatten(0, (b, t))   # (B, T, C, h, w)
        pooled = self.heads_norm(torch.cat([features, per_token.amax(dim=2)], dim=-1))         # (B, T, 2D)
        return DiTOutput(velocity=out, reward=self.reward_head(pooled).squeeze(-1),
                         termination=self.termination_head(pooled).squeeze(-1), features=features)

    def guided_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor, guidance: float,
                        frame_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                        events: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free guidance on actions: v_null + guidance * (v_action - v_null), one batched pass
        (the entity events, if any, condition both halves)."""
        if guidance == 1.0:
            return self(latents, sigma, actions, frame_mask, positions, events=events).velocity
        null = torch.full_like(actions, self.null_action)
        both = self(torch.cat([latents, latents]), torch.cat([sigma, sigma]), torch.cat([actions, null]),
                    frame_mask, positions, events=None if events is None else torch.cat([events, events])).velocity
        v_action, v_null = both.chunk(2)
        return v_null + guidance * (v_action - v_null)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on weight matrices only (not biases, norms, the positional tables or the action tables)."""
        def decayed(name: str, p: nn.Parameter) -> bool:
            return p.dim() >= 2 and not any(table in name for table in ("spatial_pos", "action_embed", "cell_pos"))
        decay = [p for n, p in self.named_parameters() if decayed(n, p)]
        rest = [p for n, p in self.named_parameters() if not decayed(n, p)]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
