"""Distribution-matching losses of Self Forcing (Huang et al. 2025, §3.3): DMD, SiD, GAN.

Each generator loss takes the student's generated clean latents `x` (B, T, C, h, w) with gradient
and the x0 predictions of the real score (frozen teacher, classifier-free guided) and of the fake
score (critic) at the same noised input, both without gradient. Only the generated frames count:
`weight` (B, T) is 1 on generated frames and 0 on the real prefix. The discriminator loss works on
critic features. Shapes: B batch, T frames, D width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _per_sample_normaliser(x: torch.Tensor, real_x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean |x - real_x0| over a sample's generated frames, shaped to broadcast over (B, T, ...)."""
    per_frame = (x - real_x0).abs().flatten(2).mean(-1)                                   # (B, T)
    norm = (per_frame * weight).sum(1) / weight.sum(1).clamp_min(1.0)                      # (B,)
    return norm.clamp_min(1e-6).view(-1, 1, 1, 1, 1)


def _weighted_mean(per_element: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    per_frame = per_element.flatten(2).mean(-1)                                            # (B, T)
    return (per_frame * weight).sum() / weight.sum().clamp_min(1.0)


def dmd_loss(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """DMD (Yin et al. 2024): grad = (fake_x0 - real_x0) / mean|x - real_x0|; loss = 0.5 ||x - sg(x - grad)||^2.

    d loss / d x = grad: the student moves along real_x0 - fake_x0, toward the teacher's distribution.
    """
    with torch.no_grad():
        grad = (fake_x0 - real_x0) / _per_sample_normaliser(x, real_x0, weight)
        target = x - grad
    return 0.5 * _weighted_mean((x - target) ** 2, weight)


def sid_loss(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor, weight: torch.Tensor,
             alpha: float = 1.0) -> torch.Tensor:
    """SiD (Zhou et al. 2024): (f_real - f_fake) * ((f_real - x) - alpha (f_real - f_fake)), normalised like DMD.

    Pass `real_x0` and `fake_x0` computed from the noised `x` WITH gradient (score networks frozen,
    their inputs not detached): the gradient then reaches the student through x and through both
    score predictions, and alpha matters. With both predictions detached, the gradient would be
    -(f_real - f_fake) for any alpha, i.e. exactly DMD's direction.
    """
    diff = real_x0 - fake_x0
    per_element = diff * ((real_x0 - x) - alpha * diff)
    return _weighted_mean(per_element / _per_sample_normaliser(x.detach(), real_x0.detach(), weight), weight)


class DiscriminatorHead(nn.Module):
    """Per-frame logit from pooled critic features (B, T, D) -> (B, T)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).squeeze(-1)


def gan_generator_loss(fake_logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss softplus(-D(fake)) on generated frames."""
    return (F.softplus(-fake_logits) * weight).sum() / weight.sum().clamp_min(1.0)


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """softplus(D(fake)) + softplus(-D(real)) on the generated (resp. matching real) frames."""
    return ((F.softplus(fake_logits) + F.softplus(-real_logits)) * weight).sum() / weight.sum().clamp_min(1.0)


def finite_difference_penalty(logits: torch.Tensor, perturbed_logits: torch.Tensor, scale: float,
                              weight: torch.Tensor) -> torch.Tensor:
    """R1/R2 by finite differences: ((D(x + scale * n) - D(x)) / scale)^2 approximates ||grad D||^2 along n."""
    return ((((perturbed_logits - logits) / scale) ** 2) * weight).sum() / weight.sum().clamp_min(1.0)
