"""The transformer blocks of the DiT: attention over (frames x tokens) with rotary positions and a KV cache, and the
adaLN-Zero block that modulates each frame's tokens by that frame's conditioning.

Owns `CacheAccess` (what one forward reads from and writes to the KV cache), the rotary tables, the attention
plan every layer of one forward shares, and the per-frame modulation. The Triton kernels (`worldmodel.kernels`)
replace the eager paths here where they are active.

Dimensions: B batch, T frames in this forward, N tokens per frame, D model width, H heads,
Dh head width, F cache frame slots.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel import kernels
from worldmodel.kv_cache import LayerKVCache


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
        angles = positions.to(torch.float32)[..., None] * freqs                      # (..., S, Dh/2 - 2q)
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
    own = Rotation.at(token_pos, None if cells is None else cells.repeat(frames, 1), head_dim, base, spatial_base,
                      dtype)
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
        # 6 x (B, T, D)
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.ada(cond).chunk(6, dim=-1)
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
