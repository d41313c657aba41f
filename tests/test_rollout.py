"""The rollout's contract: exit-step gradients only, detached cache, flat cost, sampler correctness."""
import math

import torch

from worldmodel.flow import add_noise, euler_sample, ode_sigmas, sigma_schedule
from worldmodel.rollout import new_cache, next_chunk, prime, unroll
from tests.test_dit import perturbed_model


def test_shifted_schedule_matches_the_paper_values():
    assert [round(s, 4) for s in sigma_schedule(4, 5.0)] == [1.0, 0.9375, 0.8333, 0.625]
    assert sigma_schedule(1, 5.0, max_steps=4) == [1.0]
    assert sigma_schedule(2, 5.0, max_steps=4) == [sigma_schedule(4, 5.0)[0], sigma_schedule(4, 5.0)[2]]


def count_grad_forwards(model, exit_step, grad=True, steps=4):
    """Run one Self Forcing-style chunk and record, per forward, whether it built a graph."""
    cache = new_cache(model, batch=2)
    g = torch.Generator().manual_seed(0)
    noise = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
    with torch.no_grad():
        prime(model, cache, torch.randn(2, 2, 4, 4, 4), torch.zeros(2, 2, dtype=torch.long))
    graphs = []
    hook = model.out.register_forward_hook(lambda m, i, o: graphs.append(o.requires_grad))
    result = next_chunk(model, cache, torch.ones(2, 1, dtype=torch.long), sigma_schedule(steps, 5.0), noise,
                        exit_step=exit_step, grad=grad)
    hook.remove()
    return graphs, result, cache


def test_only_the_exit_step_keeps_gradients_and_the_cache_is_detached():
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


def test_inference_rollout_records_no_graph():
    model = perturbed_model(window=4)
    graphs, result, _ = count_grad_forwards(model, exit_step=None, grad=False)
    assert graphs == [False] * 5 and not result.latents.requires_grad
    cache = new_cache(model, batch=1)
    with torch.no_grad():
        prime(model, cache, torch.randn(1, 1, 4, 4, 4), torch.zeros(1, 1, dtype=torch.long))
        out = unroll(model, cache, torch.ones(1, 5, dtype=torch.long), [1.0, 0.8], lambda s: torch.randn(s))
    assert out.latents.shape == (1, 5, 4, 4, 4) and not out.latents.requires_grad


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


def test_few_step_rule_recovers_a_deterministic_target_exactly():
    """With a single-point target the x0 prediction is exact, so 1..4 steps all return it."""
    target = torch.tensor([[1.5, -0.5]])
    field = lambda x, s: (x - target) / s  # noqa: E731  (v = eps - x0 for a point mass)
    for steps in range(1, 5):
        x = torch.randn(8, 2)
        sigmas = sigma_schedule(steps, 5.0, max_steps=4)
        for i, s in enumerate(sigmas):
            x0 = x - s * field(x, s)
            if i + 1 < len(sigmas):
                x = add_noise(x0, torch.randn_like(x0), torch.tensor(sigmas[i + 1]))
        assert torch.allclose(x0, target.expand_as(x0), atol=1e-5)
