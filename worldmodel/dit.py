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
from worldmodel.config import DiTConfig
from worldmodel.events import EventModel, cell_maps, one_hot, reachable, sample_cells
from worldmodel.kv_cache import LayerKVCache
from worldmodel.masks import previous_frames
from worldmodel.score_bar import ScoreBar


# ------------------------------------------------------------------ attention context
@dataclass
class CacheAccess:
    """What one forward reads from / writes to the KV cache (built by worldmodel.rollout).

    rows: (R,) batch elements of the cache this forward's batch maps to (R == B).
    valid: (R, F) slots the current frames may read. positions: (R, F) time position of each slot.
    write_slots: (R, T) slots the current frames are stored in, or None for a read-only pass.
    all_rows: rows is 0..B-1 of the whole cache, so reads are views (no gather copy).
    """
    layers: list[LayerKVCache]
    rows: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    write_slots: torch.Tensor | None
    all_rows: bool = False
    previous: torch.Tensor | None = None  # (R, C, h, w) each row's last written frame (zeros after a reset)
    plan: AttentionPlan | None = None   # memo: the denoising steps of one chunk share one access and one plan


@dataclass
class DiTOutput:
    velocity: torch.Tensor     # (B, T, C, h, w) predicted eps - x0
    reward: torch.Tensor       # (B, T) predicted reward on entering each frame
    termination: torch.Tensor  # (B, T) logit that the episode ended on entering each frame
    features: torch.Tensor     # (B, T, D) pooled final hidden state per frame (heads, discriminators)


@dataclass
class Rotation:
    """cos / sin tables of rotary positions, (..., S, Dh/2) each, in the activations' dtype."""
    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def at(cls, positions: torch.Tensor, cells: torch.Tensor | None, head_dim: int, base: float,
           spatial_base: float, dtype: torch.dtype) -> Rotation:
        """Angles for the Dh/2 channel pairs of tokens at time `positions` (..., S) and grid `cells` (S, 2).

        Without cells every pair rotates by time (frequencies base**(-i/pairs)); with cells a quarter of
        the pairs rotates by the token's row and a quarter by its column (frequencies spatial_base**(-i/q)),
        so attention scores depend on the offset between two tokens in time, row and column."""
        half = head_dim // 2
        quarter = half // 4 if cells is not None else 0
        timed = half - 2 * quarter
        freqs = base ** (-torch.arange(timed, device=positions.device, dtype=torch.float32) / timed)   # (Dh/2 - 2q,)
        angles = positions.to(torch.float32)[..., None] * freqs                                        # (..., S, Dh/2 - 2q)
        if quarter:
            spatial = spatial_base ** (-torch.arange(quarter, device=positions.device, dtype=torch.float32) / quarter)
            grid = cells.to(torch.float32)[..., None] * spatial                                        # (S, 2, q)
            grid = grid.flatten(-2).expand(*angles.shape[:-1], 2 * quarter)                            # (..., S, 2q)
            angles = torch.cat([angles, grid], dim=-1)                                                 # (..., S, Dh/2)
        return cls(angles.cos().to(dtype), angles.sin().to(dtype))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate pairs of channels of x (..., S, Dh)."""
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * self.cos - x2 * self.sin, x1 * self.sin + x2 * self.cos], dim=-1)


@dataclass
class AttentionPlan:
    """What every layer's attention shares in one forward, built once (not once per layer).

    mask: (T*N, T*N) or (B, 1, T*N, F*N + T*N) bool, None = all see all; own / cached: rotations of
    the current tokens and of the cached slots (None without a cache); own_mask: (T*N, T*N) the current
    tokens' mask among themselves in a cache forward (what the Triton kernel reads), None = all see all."""
    mask: torch.Tensor | None
    own: Rotation
    cached: Rotation | None
    own_mask: torch.Tensor | None = None


def attention_plan(b: int, frames: int, n: int, frame_mask: torch.Tensor | None, positions: torch.Tensor,
                   cache: CacheAccess | None, cells: torch.Tensor | None, head_dim: int, base: float,
                   spatial_base: float, dtype: torch.dtype) -> AttentionPlan:
    """cells: (N, 2) row / column of each token of a frame, or None for time-only rotary."""
    token_pos = positions.repeat_interleave(n, dim=-1)                                            # (T*N,) or (B, T*N)
    if token_pos.dim() == 2:
        token_pos = token_pos[:, None]                                                            # (B, 1, T*N)
    own = Rotation.at(token_pos, None if cells is None else cells.repeat(frames, 1), head_dim, base, spatial_base, dtype)
    mask = None if frame_mask is None else frame_mask.repeat_interleave(n, 0).repeat_interleave(n, 1)  # (T*N, T*N)
    if cache is None:
        return AttentionPlan(mask, own, None)
    tn = frames * n
    slots = cache.positions.shape[1]
    cached = Rotation.at(cache.positions.repeat_interleave(n, dim=1)[:, None],                     # (B, 1, F*N, .)
                         None if cells is None else cells.repeat(slots, 1), head_dim, base, spatial_base, dtype)
    cached_mask = cache.valid.repeat_interleave(n, dim=1)[:, None, None, :].expand(b, 1, tn, -1)
    own_mask = torch.ones(tn, tn, dtype=torch.bool, device=positions.device) if mask is None else mask
    return AttentionPlan(torch.cat([cached_mask, own_mask[None, None].expand(b, 1, tn, tn)], dim=-1), own, cached,
                         own_mask=mask)


def modulate_frames(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame affine modulation. h (B, T*N, D); shift, scale (B, T, D)."""
    b, tn, d = h.shape
    h = h.view(b, frames, tn // frames, d)
    return (h * (1 + scale[:, :, None]) + shift[:, :, None]).view(b, tn, d)


def gate_frames(h: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame gate. h (B, T*N, D); gate (B, T, D)."""
    b, tn, d = h.shape
    return (h.view(b, frames, tn // frames, d) * gate[:, :, None]).view(b, tn, d)


class FrameAttention(nn.Module):
    """Multi-head attention over frames x tokens with rotary time positions and an optional KV cache."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, plan: AttentionPlan, cache: CacheAccess | None,
                layer: int) -> torch.Tensor:
        b, tn, d = x.shape
        n = tn // frames
        q, k, v = self.qkv(x).view(b, tn, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T*N, Dh)
        q_rot, k_rot = plan.own.apply(q), plan.own.apply(k)
        if cache is not None and kernels.active(x):
            return self.proj(self.kernel_attention(q_rot, k_rot, k, v, frames, plan, cache, layer)
                             .transpose(1, 2).reshape(b, tn, d))
        if cache is not None:
            layer_cache = cache.layers[layer]
            cached_k, cached_v = layer_cache.read(None if cache.all_rows else cache.rows)          # (B, H, F*N, Dh)
            cached_k = plan.cached.apply(cached_k.to(q.dtype))
            keys, values = torch.cat([cached_k, k_rot], dim=2), torch.cat([cached_v.to(v.dtype), v], dim=2)
            if cache.write_slots is not None:
                layer_cache.write(cache.rows, cache.write_slots, k.view(b, self.heads, frames, n, -1),
                                  v.view(b, self.heads, frames, n, -1))
        else:
            keys, values = k_rot, v
        out = F.scaled_dot_product_attention(q_rot, keys, values, attn_mask=plan.mask)             # (B, H, T*N, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, tn, d))

    def kernel_attention(self, q_rot: torch.Tensor, k_rot: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int,
                         plan: AttentionPlan, cache: CacheAccess, layer: int) -> torch.Tensor:
        """The cache branch of forward as one Triton kernel that reads the cache in place; then the write.
        q_rot, k_rot, k (unrotated), v: (B, H, T*N, Dh). Returns (B, H, T*N, Dh)."""
        from worldmodel.kernels.attention import cached_attention  # noqa: PLC0415  (imports triton)

        layer_cache = cache.layers[layer]
        out = cached_attention(q_rot, k_rot, v, layer_cache.k, layer_cache.v, cache.rows, cache.valid,
                               plan.cached.cos, plan.cached.sin, plan.own_mask)            # (B, H, T*N, Dh)
        if cache.write_slots is not None:   # after the read: a slot it overwrites held a frame this chunk sees
            b, heads, tn, dh = k.shape
            layer_cache.write(cache.rows, cache.write_slots, k.view(b, heads, frames, tn // frames, dh),
                              v.view(b, heads, frames, tn // frames, dh))
        return out


class FrameAdaLNBlock(nn.Module):
    """Transformer block whose LayerNorms are modulated per frame by that frame's conditioning (adaLN-Zero)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = FrameAttention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, plan: AttentionPlan, cache: CacheAccess | None,
                layer: int) -> torch.Tensor:
        frames = cond.shape[1]
        assert x.shape[1] % frames == 0, f"{x.shape[1]} tokens do not split into {frames} frames (x {tuple(x.shape)})"
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.ada(cond).chunk(6, dim=-1)  # 6 x (B, T, D)
        if kernels.active(x):
            from worldmodel.kernels.adaln import gate_residual, gate_residual_norm_modulate, norm_modulate  # noqa: PLC0415

            h = norm_modulate(x, shift_attn, scale_attn, self.norm_attn.eps)                 # (B, T*N, D)
            x, h = gate_residual_norm_modulate(x, self.attn(h, frames, plan, cache, layer), gate_attn,
                                               shift_mlp, scale_mlp, self.norm_mlp.eps)
            return gate_residual(x, self.mlp(h), gate_mlp)
        h = modulate_frames(self.norm_attn(x), shift_attn, scale_attn, frames)
        x = x + gate_frames(self.attn(h, frames, plan, cache, layer), gate_attn, frames)
        h = modulate_frames(self.norm_mlp(x), shift_mlp, scale_mlp, frames)
        return x + gate_frames(self.mlp(h), gate_mlp, frames)


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
                                       config.event_depth, outcomes=config.event_outcomes, player=config.event_player)
                            if config.event_channels else None)
        # event_reach as a device tensor (not saved: the config holds it), read by sample_events
        self.register_buffer("reach", torch.tensor(config.event_reach, dtype=torch.int64), persistent=False)
        if config.overlap_paint:      # (P, C) each pair's overlap latent, fitted to the decoder (installed); NaN: a pair
                                      #   never recorded in one cell, not painted
            self.register_buffer("overlap_latents", torch.zeros(len(config.entity_pairs), c))
        self.score_bar = (ScoreBar(c, config.latent_size, config.score_digits, config.score_rows, config.score_dim,
                                   config.score_pixels).requires_grad_(False) if config.score_digits else None)   # trained by its own stage only

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
            raise ValueError(f"events {tuple(events.shape)} must be (B, T, E, h, w) = {(b, t, self.config.drawn_cells, h, w)}")
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
        logits = self.event_model.cell_logits(tokens)                                            # (B, E, K)
        if allowed is not None:
            logits = logits.masked_fill(~allowed[:, :self.config.event_channels], float("-inf"))
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
            latents = torch.where(lit[:, None].to(torch.bool), self.overlap_latents[k].to(latents.dtype)[None, :, None, None],
                                  latents)
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
            attention_plan(b, t, n, frame_mask, positions, cache, self.token_cells if self.config.spatial_rope else None,
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
