"""Rectified-flow maths: noising, the shifted few-step sigma schedule, and x0 / v conversions.

Convention (rectified flow): x_sigma = (1 - sigma) * x0 + sigma * eps; the network predicts
v = eps - x0, so x0 = x_sigma - sigma * v. sigma = 1 is pure noise, sigma = 0 the clean latent.
Knows no model, cache or trainer.
"""
from __future__ import annotations

import torch


def shift_sigma(t: torch.Tensor | float, shift: float) -> torch.Tensor:
    """Warp a uniform time t in [0, 1] toward high noise: sigma = shift*t / (1 + (shift-1)*t)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return shift * t / (1.0 + (shift - 1.0) * t)


def sigma_schedule(steps: int, shift: float, max_steps: int | None = None) -> list[float]:
    """The few-step sigmas, highest first, as host floats.

    With `max_steps` = 4 and shift 5 the trained schedule is t in {1, .75, .5, .25} ->
    sigma ~ {1.0, 0.9375, 0.833, 0.625}. Fewer run-time steps take an evenly spaced subset of the
    trained schedule (always starting from pure noise), so a student only meets sigmas it was
    trained on.
    """
    max_steps = steps if max_steps is None else max_steps
    if not 1 <= steps <= max_steps:
        raise ValueError(f"denoise steps must be in 1..{max_steps}, got {steps}")
    full = [float(shift_sigma(1.0 - i / max_steps, shift)) for i in range(max_steps)]
    picks = [round(i * max_steps / steps) for i in range(steps)]
    return [full[i] for i in picks]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma for per-frame sigma. x0, noise: (B, T, ...); sigma: (B, T)."""
    s = sigma.reshape(*sigma.shape, *([1] * (x0.dim() - sigma.dim())))
    return (1.0 - s) * x0 + s * noise


def x0_from_v(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Clean-latent prediction from a velocity prediction. x, v: (B, T, ...); sigma: (B, T)."""
    s = sigma.reshape(*sigma.shape, *([1] * (x.dim() - sigma.dim())))
    return x - s * v


def sample_training_sigma(shape: tuple[int, ...], shift: float, generator: torch.Generator | None = None,
                          device: torch.device | str = "cpu", low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """sigma ~ shift(U(low, high)): the per-frame training noise levels."""
    t = low + (high - low) * torch.rand(shape, generator=generator, device=device)
    return shift_sigma(t, shift).to(device)


def ode_sigmas(steps: int, shift: float) -> list[float]:
    """Euler grid from sigma 1 to 0 in `steps` steps, evenly spaced in t then shifted.

    When `steps` is a multiple of the few-step schedule's max_steps, every few-step sigma lies on
    this grid (ODE init reads the trajectory exactly there).
    """
    return [float(shift_sigma(1.0 - i / steps, shift)) for i in range(steps + 1)]


def euler_sample(velocity, x: torch.Tensor, sigmas: list[float], keep: list[float] | None = None
                 ) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """Integrate dx/dsigma = v(x, sigma) along `sigmas` (descending, ending at 0).

    velocity: callable (x, sigma float) -> v. Returns the final x (the sample) and the states at
    the sigmas listed in `keep` (matched to the grid within 1e-6).
    """
    states: dict[float, torch.Tensor] = {}
    wanted = keep or []
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        for target in wanted:
            if abs(target - sigma) < 1e-6:
                states[target] = x
        x = x + (sigma_next - sigma) * velocity(x, sigma)
    return x, states
