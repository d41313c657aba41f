"""The DiT's contract: masks hide the future, the cache reproduces the full forward, adaLN-Zero init."""
import numpy as np
import pytest
import torch

from worldmodel.config import dit_preset
from worldmodel.dit import DiT
from worldmodel.masks import block_causal_mask, teacher_forcing_mask, teacher_forcing_previous
from worldmodel.rollout import cache_access, new_cache, prime


def clip(batch=2, frames=6, model=None):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, frames, 4, 4, 4, generator=g)
    actions = torch.randint(0, 6, (batch, frames), generator=g)
    sigma = torch.rand(batch, frames, generator=g)
    return latents, sigma, actions


def test_velocity_output_and_gates_start_at_zero():
    model = DiT(dit_preset("tiny", latent_channels=4, latent_size=4, patch=1))
    latents, sigma, actions = clip()
    assert torch.all(model(latents, sigma, actions).velocity == 0)


@pytest.mark.parametrize("chunk", [1, 3])
def test_block_causal_mask_hides_future_frames(chunk, perturbed_model):
    model = perturbed_model(chunk=chunk, window=6)
    latents, sigma, actions = clip(frames=6)
    mask = block_causal_mask(6, chunk)
    with torch.no_grad():
        base = model(latents, sigma, actions, mask).velocity
        for j in range(1, 6):
            changed = latents.clone()
            changed[:, j] += 1.0
            out = model(changed, sigma, actions, mask).velocity
            first_visible = (j // chunk) * chunk          # frames of j's chunk and later may change
            assert torch.allclose(out[:, :first_visible], base[:, :first_visible], atol=1e-5)
            assert not torch.allclose(out[:, first_visible:], base[:, first_visible:])


def test_teacher_forcing_mask_lets_noisy_frames_see_only_earlier_clean_frames():
    mask = teacher_forcing_mask(3, chunk=1)
    clean, noisy = slice(0, 3), slice(3, 6)
    assert mask[clean, noisy].sum() == 0
    assert torch.equal(mask[noisy, clean], torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.bool))
    assert torch.equal(mask[noisy, noisy], torch.eye(3, dtype=torch.bool))


@pytest.mark.parametrize("chunk", [1, 3])
def test_cached_rollout_matches_full_forward(chunk, perturbed_model):
    """Writing frames chunk by chunk into the cache gives the same heads as one block-causal forward,
    and a denoising pass over the cache equals the teacher-forcing forward of that frame."""
    model = perturbed_model(chunk=chunk, window=6)
    latents, sigma, actions = clip(frames=6)
    with torch.no_grad():
        full = model(latents, torch.zeros_like(sigma), actions, block_causal_mask(6, chunk))
        cache = new_cache(model, batch=2)
        cached = prime(model, cache, latents[:, :3], actions[:, :3])
        assert torch.allclose(full.reward[:, :3], cached.reward, atol=1e-5)
        # denoise the next chunk over the cache == TF forward [clean | noisy] restricted to that chunk
        noisy = torch.randn(2, chunk, 4, 4, 4)
        access, positions = cache_access(model, cache, np.arange(2), chunk, write=False)
        v_cached = model(noisy, sigma[:, 3:3 + chunk], actions[:, 3:3 + chunk], positions=positions,
                         cache=access).velocity
        both = torch.cat([latents[:, :3 + chunk], torch.cat([latents[:, :3], noisy], 1)], 1)
        sig = torch.cat([torch.zeros(2, 3 + chunk), torch.zeros(2, 3), sigma[:, 3:3 + chunk]], 1)
        act = torch.cat([actions[:, :3 + chunk], actions[:, :3 + chunk]], 1)
        pos = torch.arange(3 + chunk).repeat(2)
        v_full = model(both, sig, act, teacher_forcing_mask(3 + chunk, chunk), pos).velocity[:, -chunk:]
        assert torch.allclose(v_cached, v_full, atol=1e-5)


def test_classifier_free_guidance_of_one_is_the_conditional_velocity(perturbed_model):
    model = perturbed_model(causal=False)
    latents, sigma, actions = clip()
    with torch.no_grad():
        assert torch.allclose(model.guided_velocity(latents, sigma, actions, 1.0),
                              model(latents, sigma, actions).velocity)
        strong = model.guided_velocity(latents, sigma, actions, 3.0)
        assert not torch.allclose(strong, model(latents, sigma, actions).velocity)


def test_wrong_action_shape_is_refused_with_shapes_in_the_message(perturbed_model):
    model = perturbed_model()
    latents, sigma, actions = clip()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(latents, sigma, actions[:, :2])


def test_the_previous_frame_and_the_action_channels_reach_the_output(perturbed_model):
    model = perturbed_model()
    latents, sigma, actions = clip()
    with torch.no_grad():
        base = model(latents, sigma, actions).velocity
        other_previous = model(latents, sigma, actions, previous=torch.randn_like(latents)).velocity
        other_actions = model(latents, sigma, (actions + 1) % 5).velocity
    assert not torch.allclose(base, other_previous)
    assert not torch.allclose(base, other_actions)


@pytest.mark.parametrize("chunk", [1, 3])
def test_teacher_forcing_layout_with_its_previous_frames_is_what_the_rollout_computes(chunk, perturbed_model):
    """The TF training forward ([clean | noisy], teacher_forcing_previous) == denoising over the cache."""
    model = perturbed_model(chunk=chunk, window=6)
    latents, sigma, actions = clip(frames=3 + chunk)
    noisy = torch.randn(2, 3 + chunk, 4, 4, 4)
    t = 3 + chunk
    with torch.no_grad():
        both = torch.cat([latents, noisy], 1)
        sig = torch.cat([torch.zeros(2, t), sigma], 1)
        full = model(both, sig, actions.repeat(1, 2), teacher_forcing_mask(t, chunk), torch.arange(t).repeat(2),
                     previous=teacher_forcing_previous(latents, noisy, chunk)).velocity[:, -chunk:]
        cache = new_cache(model, batch=2)
        prime(model, cache, latents[:, :3], actions[:, :3])
        access, positions = cache_access(model, cache, np.arange(2), chunk, write=False)
        cached = model(noisy[:, 3:], sigma[:, 3:], actions[:, 3:], positions=positions, cache=access).velocity
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
