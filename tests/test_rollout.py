"""The one rollout (`worldmodel.rollout`), tested through its own functions: the cached rollout computes
what a block-causal full forward computes, it is deterministic given the noise, a per-row reset
restarts one row only, only the exit step keeps gradients, and the few-step sampler is exact where
the target is known. Also the flow sampler's schedules.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worldmodel.config import dit_preset
from worldmodel.flow import euler_sample, ode_sigmas, sigma_schedule
from worldmodel.masks import block_causal_mask
from worldmodel.rollout import new_cache, next_chunk, prime, unroll

LATENT = (4, 4, 4)   # (C, h, w) of the perturbed_model fixture's latents


def row_noise(seeds: list[int]):
    """A noise source with one generator per row (as envs.dream has): row r's draws do not depend on the others."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]

    def sample(shape):
        return torch.stack([torch.randn(shape[1:], generator=g) for g in generators])
    return sample


def recorded(noise):
    """The noise source, plus the list of every tensor it returned."""
    drawn = []

    def sample(shape):
        drawn.append(noise(shape))
        return drawn[-1]
    return sample, drawn


def context(batch: int, frames: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, *LATENT, generator=g), torch.randint(0, 5, (batch, frames), generator=g)


def roll(model, latents, actions, future_actions, seeds, steps=4):
    """Prime a fresh cache with `latents`, then `unroll` under `future_actions` with per-row noise."""
    cache = new_cache(model, batch=len(latents))
    with torch.no_grad():
        prime(model, cache, latents, actions)
        return unroll(model, cache, future_actions, sigma_schedule(steps, 5.0), row_noise(seeds))


# ------------------------------------------------------------------ cached rollout == full forward
@pytest.mark.parametrize("chunk", [1, 3])
def test_cached_rollout_writes_what_a_block_causal_forward_computes(perturbed_model, chunk):
    """The heads of every generated frame (its clean cache-writing pass) equal one full forward over the
    context plus the generated frames under the block-causal mask (the window holds all of them)."""
    model = perturbed_model(chunk=chunk, window=12)
    latents, actions = context(2, 3)
    future = torch.randint(0, 5, (2, 2 * chunk), generator=torch.Generator().manual_seed(2))
    out = roll(model, latents, actions, future, seeds=[0, 1])
    assert out.latents.shape == (2, 2 * chunk, *LATENT)
    frames, acts = torch.cat([latents, out.latents], 1), torch.cat([actions, future], 1)
    with torch.no_grad():
        full = model(frames, torch.zeros(acts.shape), acts, block_causal_mask(frames.shape[1], chunk))
    torch.testing.assert_close(out.reward, full.reward[:, 3:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.termination, full.termination[:, 3:], atol=1e-5, rtol=1e-4)


def test_one_denoising_step_over_the_cache_is_the_full_forward_of_the_noisy_frame(perturbed_model):
    """With a one-step schedule the new frame is x - 1 * v(x), v read over the cache == v of a block-causal
    forward over [context, x] with the noisy frame at sigma 1."""
    model = perturbed_model(window=8)
    latents, actions = context(2, 3)
    cache = new_cache(model, batch=2)
    noise, drawn = recorded(row_noise([0, 1]))
    action = torch.tensor([[4], [2]])
    with torch.no_grad():
        prime(model, cache, latents, actions)
        out = next_chunk(model, cache, action, [1.0], noise)
        x = drawn[0]
        sigma = torch.cat([torch.zeros(2, 3), torch.ones(2, 1)], 1)
        full = model(torch.cat([latents, x], 1), sigma, torch.cat([actions, action], 1), block_causal_mask(4, 1))
    torch.testing.assert_close(out.latents[:, 0], x[:, 0] - full.velocity[:, -1], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ determinism and per-row reset
def test_the_rollout_is_a_function_of_the_context_the_actions_and_the_noise(perturbed_model):
    model = perturbed_model(window=4)
    latents, actions = context(2, 2)
    future = torch.tensor([[1, 1, 4, 0, 3, 3], [2, 2, 2, 1, 0, 4]])   # past the window: frames roll out of the cache
    first, again = roll(model, latents, actions, future, [0, 1]), roll(model, latents, actions, future, [0, 1])
    assert torch.equal(first.latents, again.latents) and torch.equal(first.reward, again.reward)
    other_noise = roll(model, latents, actions, future, [5, 6])
    other_actions = roll(model, latents, actions, future.flip(1), [0, 1])
    assert not torch.allclose(first.latents, other_noise.latents)
    assert not torch.allclose(first.latents[:, 1:], other_actions.latents[:, 1:])


def test_a_per_row_reset_restarts_that_row_and_leaves_the_others_untouched(perturbed_model):
    """Re-priming row 1 mid-rollout: rows 0 and 2 go on as if nothing happened, row 1 continues exactly as a
    fresh batch-1 rollout from its new context (same per-row noise)."""
    model = perturbed_model(window=4)
    latents, actions = context(3, 2)
    new_latents, new_actions = context(1, 2, seed=7)
    steps = [torch.tensor([[1], [2], [3]]), torch.tensor([[4], [4], [4]]), torch.tensor([[0], [1], [2]])]
    sigmas = sigma_schedule(2, 5.0, max_steps=4)

    def run(reset: bool):
        cache, (noise, drawn) = new_cache(model, batch=3), recorded(row_noise([0, 1, 2]))
        with torch.no_grad():
            prime(model, cache, latents, actions)
            next_chunk(model, cache, steps[0], sigmas, noise)
            draws_before_reset = len(drawn)
            if reset:
                prime(model, cache, new_latents, new_actions, rows=np.array([1]))
            return (torch.cat([next_chunk(model, cache, a, sigmas, noise).latents for a in steps[1:]], 1),
                    draws_before_reset)

    (untouched, _), (restarted, draws) = run(reset=False), run(reset=True)
    torch.testing.assert_close(restarted[[0, 2]], untouched[[0, 2]], atol=1e-5, rtol=1e-4)
    cache, single = new_cache(model, batch=1), row_noise([1])
    for _ in range(draws):                       # row 1's generator as it was at the reset
        single((1, 1, *LATENT))
    with torch.no_grad():
        prime(model, cache, new_latents, new_actions)
        fresh = torch.cat([next_chunk(model, cache, a[[1]], sigmas, single).latents for a in steps[1:]], 1)
    torch.testing.assert_close(restarted[[1]], fresh, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(restarted[1], untouched[1])


# ------------------------------------------------------------------ gradients
def count_grad_forwards(model, exit_step, grad=True, steps=4):
    """Run one Self Forcing-style chunk and record, per forward, whether it built a graph."""
    cache = new_cache(model, batch=2)
    g = torch.Generator().manual_seed(0)
    noise = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
    with torch.no_grad():
        prime(model, cache, torch.randn(2, 2, *LATENT), torch.zeros(2, 2, dtype=torch.long))
    graphs = []
    hook = model.out.register_forward_hook(lambda m, i, o: graphs.append(o.requires_grad))
    result = next_chunk(model, cache, torch.ones(2, 1, dtype=torch.long), sigma_schedule(steps, 5.0), noise,
                        exit_step=exit_step, grad=grad)
    hook.remove()
    return graphs, result, cache


def test_only_the_exit_step_keeps_gradients_and_the_cache_is_detached(perturbed_model):
    model = perturbed_model(window=4)
    for exit_step in range(4):
        graphs, result, cache = count_grad_forwards(model, exit_step)
        # exit_step + 1 denoising forwards, then one no-grad cache write
        assert graphs == [False] * exit_step + [True] + [False]
        assert result.latents.requires_grad
        assert not any(layer.k.requires_grad or layer.v.requires_grad for layer in cache.layers)
        result.latents.sum().backward()
        assert model.out.weight.grad is not None
        model.zero_grad()


def test_inference_rollout_records_no_graph(perturbed_model):
    model = perturbed_model(window=4)
    graphs, result, _ = count_grad_forwards(model, exit_step=None, grad=False)
    assert graphs == [False] * 5 and not result.latents.requires_grad
    cache = new_cache(model, batch=1)
    with torch.no_grad():
        prime(model, cache, torch.randn(1, 1, *LATENT), torch.zeros(1, 1, dtype=torch.long))
        out = unroll(model, cache, torch.ones(1, 5, dtype=torch.long), [1.0, 0.8], lambda s: torch.randn(s))
    assert out.latents.shape == (1, 5, *LATENT) and not out.latents.requires_grad


# ------------------------------------------------------------------ the few-step sampler where the answer is known
class PointMassDenoiser(torch.nn.Module):
    """The exact velocity field of a flow toward one point, v = (x - target) / sigma, with a tiny causal
    DiT's config so that `next_chunk` and the KV cache accept it; its heads read zero."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.config = dit_preset("tiny", latent_channels=LATENT[0], latent_size=LATENT[1], patch=1)
        self.head_dim = self.config.dim // self.config.heads
        self.target = target

    def forward(self, latents, sigma, actions, *args, **kwargs):
        velocity = (latents - self.target) / sigma.clamp_min(1e-6)[..., None, None, None]
        zeros = torch.zeros(latents.shape[:2])
        return SimpleNamespace(velocity=velocity, reward=zeros, termination=zeros)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_next_chunk_recovers_a_deterministic_target_exactly(steps):
    """With a single-point target every x0 prediction is exact, so next_chunk returns it at any step count
    and any exit step, however the re-noising between steps went."""
    target = torch.randn(1, 1, *LATENT, generator=torch.Generator().manual_seed(3))
    model = PointMassDenoiser(target)
    cache = new_cache(model, batch=2)
    noise = row_noise([0, 1])
    prime(model, cache, torch.zeros(2, 1, *LATENT), torch.zeros(2, 1, dtype=torch.long))
    for exit_step in (None, steps - 1, 0):
        out = next_chunk(model, cache, torch.ones(2, 1, dtype=torch.long), sigma_schedule(steps, 5.0, max_steps=4),
                         noise, exit_step=exit_step)
        torch.testing.assert_close(out.latents, target.expand(2, 1, *LATENT), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ schedules
def test_shifted_schedule_matches_the_paper_values():
    assert [round(s, 4) for s in sigma_schedule(4, 5.0)] == [1.0, 0.9375, 0.8333, 0.625]
    assert sigma_schedule(1, 5.0, max_steps=4) == [1.0]
    assert sigma_schedule(2, 5.0, max_steps=4) == [sigma_schedule(4, 5.0)[0], sigma_schedule(4, 5.0)[2]]


class MixtureDenoiser(torch.nn.Module):
    """The exact velocity field of a rectified flow toward a 2-D mixture of two points (+-2, 0)."""
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])

    def velocity(self, x, sigma):
        # posterior over centres given x_sigma = (1 - s) c + s eps
        s = sigma.clamp_min(1e-4)
        d2 = ((x[:, None, :] - (1 - s) * self.centres[None]) ** 2).sum(-1)      # (M, 2)
        w = torch.softmax(-d2 / (2 * s ** 2), dim=1)
        x0 = w @ self.centres
        return (x - x0) / s


def test_euler_ode_sampler_reaches_the_target_mixture():
    """Many Euler steps along the exact flow land on the mixture's two modes in equal shares."""
    torch.manual_seed(0)
    field = MixtureDenoiser()
    sample, states = euler_sample(lambda x, s: field.velocity(x, torch.tensor(s)), torch.randn(4000, 2),
                                  ode_sigmas(48, 5.0), keep=sigma_schedule(4, 5.0))
    distance = torch.cdist(sample, field.centres).min(dim=1).values
    assert distance.mean() < 0.05
    assert math.isclose(float((sample[:, 0] > 0).float().mean()), 0.5, abs_tol=0.05)
    assert sorted(states) == sorted(sigma_schedule(4, 5.0))
