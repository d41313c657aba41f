"""Triton kernel: the per-frame adaLN elementwise chains of a DiT block, fused into one pass each.

Owns `norm_modulate`, `gate_residual` and `gate_residual_norm_modulate`, the kernel twins of
`modulate_frames(layer_norm(x), shift, scale)` and `x + gate_frames(y, gate)` in worldmodel/dit.py.
A block runs them as: norm_modulate (before attention), gate_residual_norm_modulate (the attention
residual and the MLP's input in one read of x), gate_residual (the MLP residual). Each token reads
its frame's shift / scale / gate rows straight from the adaLN output's chunks (no broadcast copy);
LayerNorm (no affine) statistics are fp32.

Imports triton; only `worldmodel.dit` imports this, when `kernels.active`.

Dimensions: B batch, T frames, N tokens per frame, S = T*N tokens, D model width.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS = 4   # tokens per program


@triton.jit
def _adaln_kernel(x_ptr, y_ptr, gate_ptr, shift_ptr, scale_ptr, x_out_ptr, h_out_ptr,
                  sx_b, sx_s, sy_b, sy_s, sg_b, sg_t, ssh_b, ssh_t, ssc_b, ssc_t, sxo_b, sxo_s, sho_b, sho_s,
                  tokens, S, N, D, eps,
                  RESIDUAL: tl.constexpr, NORM: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                     # token index over B*S
    r_ok = offs_r < tokens
    b, s = offs_r // S, offs_r % S
    t = s // N                                                                # the token's frame
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    ok = r_ok[:, None] & d_ok[None, :]
    x = tl.load(x_ptr + (b * sx_b + s * sx_s)[:, None] + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
    if RESIDUAL:                                                              # x + gate[frame] * y
        y = tl.load(y_ptr + (b * sy_b + s * sy_s)[:, None] + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
        gate = tl.load(gate_ptr + (b * sg_b + t * sg_t)[:, None] + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
        x = (x + gate * y).to(x_out_ptr.dtype.element_ty)                     # rounded as stored, then normed
        tl.store(x_out_ptr + (b * sxo_b + s * sxo_s)[:, None] + offs_d[None, :], x, mask=ok)
        x = x.to(tl.float32)
    if NORM:                                                                  # layer_norm(x) * (1 + scale) + shift
        mean = tl.sum(x, axis=1) / D
        centred = tl.where(ok, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
        shift = tl.load(shift_ptr + (b * ssh_b + t * ssh_t)[:, None] + offs_d[None, :], mask=ok, other=0.0)
        scale = tl.load(scale_ptr + (b * ssc_b + t * ssc_t)[:, None] + offs_d[None, :], mask=ok, other=0.0)
        h = centred * rstd[:, None] * (1.0 + scale.to(tl.float32)) + shift.to(tl.float32)
        tl.store(h_out_ptr + (b * sho_b + s * sho_s)[:, None] + offs_d[None, :],
                 h.to(h_out_ptr.dtype.element_ty), mask=ok)


def _frame_rows(cond: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """A (B, T, D) conditioning chunk as a kernel argument: itself (or x as a dummy) and its (b, t) strides."""
    if cond is None:
        return x, 0, 0
    assert cond.dim() == 3 and cond.shape[0] == x.shape[0] and cond.shape[2] == x.shape[2] and cond.stride(2) == 1, \
        f"conditioning {tuple(cond.shape)} must be (B, T, D) with unit channel stride for x {tuple(x.shape)}"
    return cond, cond.stride(0), cond.stride(1)


def _launch(x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift: torch.Tensor | None,
            scale: torch.Tensor | None, eps: float) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    b, s, d = x.shape
    frames = (gate if gate is not None else shift).shape[1]
    assert s % frames == 0, f"{s} tokens do not split into {frames} frames (x {tuple(x.shape)})"
    assert x.stride(2) == 1 and (y is None or (y.shape == x.shape and y.stride(2) == 1)), \
        f"x {tuple(x.shape)} and y {None if y is None else tuple(y.shape)} must match with unit channel stride"
    residual, norm = y is not None, shift is not None
    x_out = torch.empty_like(x) if residual else None                        # (B, S, D)
    h_out = torch.empty_like(x) if norm else None                            # (B, S, D)
    gate_arg, sg_b, sg_t = _frame_rows(gate, x)                              # x stands in for what is unused
    shift_arg, ssh_b, ssh_t = _frame_rows(shift, x)
    scale_arg, ssc_b, ssc_t = _frame_rows(scale, x)
    y_arg = y if residual else x
    xo, ho = (x_out if residual else x), (h_out if norm else x)
    _adaln_kernel[(triton.cdiv(b * s, ROWS),)](
        x, y_arg, gate_arg, shift_arg, scale_arg, xo, ho,
        x.stride(0), x.stride(1), y_arg.stride(0), y_arg.stride(1), sg_b, sg_t, ssh_b, ssh_t, ssc_b, ssc_t,
        xo.stride(0), xo.stride(1), ho.stride(0), ho.stride(1),
        b * s, s, s // frames, d, eps,
        RESIDUAL=residual, NORM=norm, ROWS=ROWS, BLOCK_D=triton.next_power_of_2(d))
    return x_out, h_out


def norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """layer_norm(x) * (1 + scale) + shift per frame. x (B, S, D); shift, scale (B, T, D). -> (B, S, D)"""
    return _launch(x, None, None, shift, scale, eps)[1]


def gate_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + gate * y per frame. x, y (B, S, D); gate (B, T, D). -> (B, S, D)"""
    return _launch(x, y, gate, None, None, 0.0)[0]


def gate_residual_norm_modulate(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor,
                                scale: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x', layer_norm(x') * (1 + scale) + shift) with x' = x + gate * y, per frame, in one pass.

    x, y (B, S, D); gate, shift, scale (B, T, D). -> x' (B, S, D), h (B, S, D)"""
    return _launch(x, y, gate, shift, scale, eps)
