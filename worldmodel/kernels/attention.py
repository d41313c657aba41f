"""Triton kernel: one forward's attention over the ring-buffer KV cache and the current chunk, fused.

Owns `cached_attention`, the kernel twin of the cache branch of `worldmodel.dit.FrameAttention`.
The PyTorch path gathers the cache rows (when it serves only some), rotates every cached key into
a new tensor, concatenates [cached | current] keys and values and applies a (B, 1, T*N, F*N + T*N)
mask. Here each program walks the cache layer *in place* (its rows picked through `rows`, its slots
through `valid`), rotates each cached key tile in registers by its slot's rotary angles, then walks
the current chunk's keys, with one online softmax (flash-attention style, fp32 statistics and
accumulator) over both. Nothing is concatenated, gathered or masked in memory.

Must be called before the chunk is written to the cache: a slot it overwrites still holds a frame
the chunk may see. Imports triton; only `worldmodel.dit` imports this, when `kernels.active`.

Dimensions: B batch, H heads, F cache frame slots, N tokens per frame, S = T*N current tokens,
Dh head width (even; rotary pairs channel i with i + Dh/2). Matmuls take the activations' dtype
(fp32 ones in full IEEE precision, not TF32); softmax statistics and the accumulator are fp32.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

MIN_DOT = 16   # smallest block side tl.dot accepts on a GPU


@triton.jit
def _online_softmax_step(scores, values, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Fold one block of scores (BM, BN) fp32 (-inf where hidden) and values (BN, BD) into (m, l, acc)."""
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)          # a row that saw nothing yet stays at 0
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(scores - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(values.dtype), values, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _cached_attention_kernel(
        q_ptr, k_ptr, v_ptr, ck_ptr, cv_ptr, rows_ptr, valid_ptr, cos_ptr, sin_ptr, mask_ptr, out_ptr,
        sq_b, sq_h, sq_s, sq_d, sk_b, sk_h, sk_s, sk_d, sv_b, sv_h, sv_s, sv_d,
        sck_b, sck_h, sck_f, sck_n, sck_d, scv_b, scv_h, scv_f, scv_n, scv_d,
        sval_b, sval_f, sr_b, sr_s, sr_d, sm_q, sm_k, so_b, so_h, so_s, so_d,
        H, S, F, N, HALF, scale,
        HAS_MASK: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_HALF: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    row = tl.load(rows_ptr + b)                                   # this element's row of the cache
    dot_dtype = q_ptr.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < S
    offs_h = tl.arange(0, BLOCK_HALF)                             # a rotary pair: channels i and i + HALF
    h_ok = offs_h < HALF
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < 2 * HALF

    q_rows = q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_s
    q_mask = m_ok[:, None] & h_ok[None, :]
    q1 = tl.load(q_rows + offs_h[None, :] * sq_d, mask=q_mask, other=0.0)              # (BM, BH) rotated
    q2 = tl.load(q_rows + (offs_h[None, :] + HALF) * sq_d, mask=q_mask, other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)

    # cached tokens, read in place: token j of the layer is slot j // N, token j % N of that frame
    for start in range(0, F * N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        slot, tok = offs_n // N, offs_n % N
        n_ok = offs_n < F * N
        seen = n_ok & (tl.load(valid_ptr + b * sval_b + slot * sval_f, mask=n_ok, other=0) != 0)   # (BN,)
        k_rows = ck_ptr + row * sck_b + h * sck_h + slot[:, None] * sck_f + tok[:, None] * sck_n
        k_mask = seen[:, None] & h_ok[None, :]
        k1 = tl.load(k_rows + offs_h[None, :] * sck_d, mask=k_mask, other=0.0).to(tl.float32)   # (BN, BH)
        k2 = tl.load(k_rows + (offs_h[None, :] + HALF) * sck_d, mask=k_mask, other=0.0).to(tl.float32)
        angles = b * sr_b + offs_n[:, None] * sr_s + offs_h[None, :] * sr_d
        cos = tl.load(cos_ptr + angles, mask=k_mask, other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + angles, mask=k_mask, other=0.0).to(tl.float32)
        r1 = (k1 * cos - k2 * sin).to(dot_dtype)                                            # rotated key
        r2 = (k1 * sin + k2 * cos).to(dot_dtype)
        scores = tl.dot(q1, tl.trans(r1), input_precision=PRECISION)
        scores = tl.dot(q2, tl.trans(r2), acc=scores, input_precision=PRECISION) * scale       # (BM, BN) fp32
        scores = tl.where(seen[None, :], scores, float("-inf"))
        v_rows = cv_ptr + row * scv_b + h * scv_h + slot[:, None] * scv_f + tok[:, None] * scv_n
        values = tl.load(v_rows + offs_d[None, :] * scv_d, mask=seen[:, None] & d_ok[None, :], other=0.0)
        m_i, l_i, acc = _online_softmax_step(scores, values, m_i, l_i, acc, PRECISION)

    # the current chunk's own tokens (keys already rotated), under the own mask if any
    for start in range(0, S, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < S
        k_rows = k_ptr + b * sk_b + h * sk_h + offs_n[:, None] * sk_s
        k_mask = n_ok[:, None] & h_ok[None, :]
        k1 = tl.load(k_rows + offs_h[None, :] * sk_d, mask=k_mask, other=0.0)
        k2 = tl.load(k_rows + (offs_h[None, :] + HALF) * sk_d, mask=k_mask, other=0.0)
        scores = tl.dot(q1, tl.trans(k1), input_precision=PRECISION)
        scores = tl.dot(q2, tl.trans(k2), acc=scores, input_precision=PRECISION) * scale
        seen = m_ok[:, None] & n_ok[None, :]                                                # (BM, BN)
        if HAS_MASK:
            own = tl.load(mask_ptr + offs_m[:, None] * sm_q + offs_n[None, :] * sm_k, mask=seen, other=0)
            seen = seen & (own != 0)
        scores = tl.where(seen, scores, float("-inf"))
        values = tl.load(v_ptr + b * sv_b + h * sv_h + offs_n[:, None] * sv_s + offs_d[None, :] * sv_d,
                         mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        m_i, l_i, acc = _online_softmax_step(scores, values, m_i, l_i, acc, PRECISION)

    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]                                    # (BM, BD)
    out_rows = out_ptr + b * so_b + h * so_h + offs_m[:, None] * so_s + offs_d[None, :] * so_d
    tl.store(out_rows, out.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


def _block(n: int, cap: int) -> int:
    return max(MIN_DOT, min(cap, triton.next_power_of_2(n)))


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                     rows: torch.Tensor, valid: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     own_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q [cached keys rotated | k]^T / sqrt(Dh)) [cached values | v], cached slots hidden where not valid.

    q, k: (B, H, S, Dh) the current tokens, rotated; v (B, H, S, Dh). cache_k, cache_v: (B_cache, H, F, N, Dh)
    a layer of the KV cache, keys unrotated. rows (B,) int: the cache row of each element. valid (B, F) bool.
    cos, sin: (B, 1, F*N, Dh/2) the cached keys' rotation. own_mask: (S, S) bool among the current tokens, or
    None (all see all). Returns (B, H, S, Dh) in q's dtype: a view of a (B, S, H, Dh) buffer, so
    `out.transpose(1, 2).reshape(B, S, H*Dh)` is free.
    """
    b, heads, s, dh = q.shape
    f, n = cache_k.shape[2], cache_k.shape[3]
    assert dh % 2 == 0 and cache_k.shape[1] == heads and cache_k.shape[4] == dh, \
        f"q {tuple(q.shape)} and cache keys {tuple(cache_k.shape)} disagree"
    assert valid.shape == (b, f) and cos.shape[-2] == f * n and cos.stride() == sin.stride(), \
        f"valid {tuple(valid.shape)} / rotation {tuple(cos.shape)} do not match B={b}, F={f}, N={n}"
    out = torch.empty(b, s, heads, dh, device=q.device, dtype=q.dtype).transpose(1, 2)   # (B, H, S, Dh) view
    valid_bytes = valid.view(torch.uint8)                                               # (B, F)
    mask = own_mask.view(torch.uint8) if own_mask is not None else valid_bytes         # dummy pointer when None
    mask_strides = (mask.stride(0), mask.stride(1)) if own_mask is not None else (0, 0)
    cos, sin = cos[:, 0], sin[:, 0]                                                     # (B, F*N, Dh/2)
    block_m, block_n = _block(s, 64), _block(f * n, 64)
    grid = (triton.cdiv(s, block_m), b * heads)
    _cached_attention_kernel[grid](
        q, k, v, cache_k, cache_v, rows, valid_bytes, cos, sin, mask, out,
        *q.stride(), *k.stride(), *v.stride(), *cache_k.stride(), *cache_v.stride(),
        *valid_bytes.stride(), *cos.stride(), *mask_strides, *out.stride(),
        heads, s, f, n, dh // 2, 1.0 / math.sqrt(dh),
        HAS_MASK=own_mask is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",   # tf32: unused by 16-bit
        BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_HALF=max(MIN_DOT, triton.next_power_of_2(dh // 2)), BLOCK_D=max(MIN_DOT, triton.next_power_of_2(dh)))
    return out
