"""Frame metrics: PSNR, SSIM and the palette artifact rate, on uint8 frames (..., H, W, 3).

Pure numpy/torch functions of frames; no model, env or trainer. Batched over leading dims; each
returns one value per frame (shape = leading dims).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PALETTE_THRESHOLD = 40.0   # Euclidean RGB distance beyond which a pixel is "off-palette"


def _as_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames).float()


def psnr(generated, reference) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per frame; inf for identical frames."""
    a, b = _as_float(generated), _as_float(reference)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = ((a - b) ** 2).flatten(-3).mean(-1)
    with np.errstate(divide="ignore"):
        return (10.0 * np.log10(255.0 ** 2 / mse.numpy())).astype(np.float64)


def ssim(generated, reference, window: int = 7) -> np.ndarray:
    """Structural similarity per frame (grey-level, uniform window), in [-1, 1]; 1 for identical frames."""
    a, b = _as_float(generated), _as_float(reference)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    lead = a.shape[:-3]
    grey = torch.tensor([0.299, 0.587, 0.114])
    x = (a.reshape(-1, *a.shape[-3:]) @ grey)[:, None]          # (M, 1, H, W)
    y = (b.reshape(-1, *b.shape[-3:]) @ grey)[:, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    pool = lambda z: F.avg_pool2d(z, window, stride=1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx ** 2, pool(y * y) - my ** 2, pool(x * y) - mx * my
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return value.flatten(1).mean(1).reshape(lead).numpy().astype(np.float64)


def palette_artifact_rate(frames, palette: np.ndarray, threshold: float = PALETTE_THRESHOLD) -> np.ndarray:
    """Fraction of pixels farther than `threshold` (RGB distance) from every palette colour, per frame."""
    x = _as_float(frames)                                              # (..., H, W, 3)
    colours = torch.as_tensor(np.asarray(palette), dtype=torch.float32)  # (P, 3)
    distance = torch.cdist(x.reshape(-1, 3), colours).min(dim=1).values.reshape(x.shape[:-1])
    return (distance > threshold).float().flatten(-2).mean(-1).numpy().astype(np.float64)
