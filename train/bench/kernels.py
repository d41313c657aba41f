"""Benchmark section: the Triton kernels (worldmodel/kernels/) against the PyTorch path they replace.

Owns `kernel_speed`. On a CUDA device it times, kernels off and on, the median milliseconds of
(a) one layer's attention over a full KV cache, (b) one block's adaLN chain (LayerNorm + modulate,
gate + residual, twice), (c) one denoising-step DiT forward over the cache, and reports the
speed-ups and how far the kernel forward is from the PyTorch one. Without CUDA or triton it returns
no figures and the reason (section e of `python -m train.bench`).

Dimensions: B batch, T frames per chunk, N tokens per frame, D model width.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from worldmodel import kernels
from worldmodel.config import dit_preset
from worldmodel.blocks import gate_frames, modulate_frames
from worldmodel.dit import DiT
from worldmodel.rollout import cache_access, new_cache, prime


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_ms(run: Callable[[], object], device: str, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _switched(on: bool, run: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        previous = kernels.enabled()
        kernels.enable(on)
        try:
            return run()
        finally:
            kernels.enable(previous)
    return call


def kernel_speed(size: str = "base", batch: int = 16, dtype: torch.dtype = torch.float32, repeats: int = 50,
                 warmup: int = 5, device: str = "cuda") -> tuple[dict[str, float], str]:
    """Kernel vs PyTorch timings of an untrained DiT preset `size` over a full cache of `batch` rows.

    Returns (figures, reason): figures in ms (and speed-up ratios, and the forward's max abs difference),
    reason "" when they were measured, else why not (figures then empty). device "cpu" measures only under
    TRITON_INTERPRET=1 (a smoke run of this function; interpreter timings mean nothing)."""
    if device == "cuda" and not torch.cuda.is_available():
        return {}, "no CUDA device: the Triton kernels run on a GPU (the CPU interpreter is for tests only)"
    if device == "cpu" and not kernels.interpreting():
        return {}, "on the CPU the kernels run only in triton's interpreter (TRITON_INTERPRET=1)"
    if not kernels.available():
        return {}, "triton is not installed (pip install 'dreamgym[triton]')"
    torch.manual_seed(0)
    model = DiT(dit_preset(size)).to(device, dtype).eval()
    # adaLN-Zero starts as identity with a zero output: perturb, so the difference means something
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = model.config
    frame = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    cache = new_cache(model, batch, device, dtype)
    context = cfg.chunk * math.ceil((cfg.sink + cfg.window) / cfg.chunk)               # fills every slot
    with torch.inference_mode():
        prime(model, cache, torch.randn(batch, context, *frame, device=device, dtype=dtype),
              torch.zeros(batch, context, dtype=torch.long, device=device))
    access, positions = cache_access(model, cache, np.arange(batch), cfg.chunk, write=False)
    noisy = torch.randn(batch, cfg.chunk, *frame, device=device, dtype=dtype)           # (B, T, C, h, w)
    sigma = torch.full((batch, cfg.chunk), 0.5, device=device)
    actions = torch.zeros(batch, cfg.chunk, dtype=torch.long, device=device)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(noisy, sigma, actions, positions=positions, cache=access).velocity

    forward()                                                                           # builds access.plan
    block, tokens = model.blocks[0], cfg.chunk * cfg.tokens_per_frame
    h = torch.randn(batch, tokens, cfg.dim, device=device, dtype=dtype)                 # (B, T*N, D)
    y = torch.randn_like(h)
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = torch.randn(
        batch, cfg.chunk, 6 * cfg.dim, device=device, dtype=dtype).chunk(6, dim=-1)     # 6 x (B, T, D)

    def attention() -> torch.Tensor:
        with torch.inference_mode():
            return block.attn(h, cfg.chunk, access.plan, access, 0)

    def adaln_pytorch() -> tuple[torch.Tensor, torch.Tensor]:
        first = modulate_frames(F.layer_norm(h, (cfg.dim,), eps=1e-6), shift_a, scale_a, cfg.chunk)
        x = h + gate_frames(y, gate_a, cfg.chunk)
        second = modulate_frames(F.layer_norm(x, (cfg.dim,), eps=1e-6), shift_m, scale_m, cfg.chunk)
        return first, x + gate_frames(second, gate_m, cfg.chunk)

    def adaln_triton() -> tuple[torch.Tensor, torch.Tensor]:
        from worldmodel.kernels.adaln import gate_residual, gate_residual_norm_modulate, norm_modulate  # noqa: PLC0415
        first = norm_modulate(h, shift_a, scale_a, 1e-6)
        x, second = gate_residual_norm_modulate(h, y, gate_a, shift_m, scale_m, 1e-6)
        return first, gate_residual(x, second, gate_m)

    figures: dict[str, float] = {"batch": float(batch)}
    for name, off, on in [("attention", _switched(False, attention), _switched(True, attention)),
                          ("adaln", adaln_pytorch, adaln_triton),
                          ("forward", _switched(False, forward), _switched(True, forward))]:
        figures[f"{name}_ms_pytorch"] = _median_ms(off, device, repeats, warmup)
        figures[f"{name}_ms_triton"] = _median_ms(on, device, repeats, warmup)
        figures[f"{name}_speedup"] = figures[f"{name}_ms_pytorch"] / figures[f"{name}_ms_triton"]
    figures["forward_max_abs_diff"] = float((_switched(True, forward)() - _switched(False, forward)()).abs().max())
    return figures, ""
