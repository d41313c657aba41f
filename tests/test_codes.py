"""Learned codes (train.common.codes): the teacher of a game without a reader is given, per code slot, the cell a
posterior network picks from the frame and the one before it; the posterior learns through the straight-through
draw, and its labels of the latent cache take a reader's place."""
import numpy as np
import torch

from train.common.codes import CodePosterior, clip_maps, episode_codes, straight_through, write_codes
from train.common.latents import load_latents
from worldmodel.data import Episode


def test_a_straight_through_draw_is_one_hot_forward_and_passes_gradients_back():
    logits = torch.randn(2, 3, 2, 16, requires_grad=True)
    maps = straight_through(logits, torch.Generator().manual_seed(0), 4)
    assert maps.shape == (2, 3, 2, 4, 4)
    hard = maps.detach().flatten(-2)
    torch.testing.assert_close(hard.sum(-1), torch.ones(2, 3, 2))
    assert bool(((hard - hard.round()).abs() < 1e-6).all())                 # 0 / 1 up to rounding
    (maps * torch.randn_like(maps)).sum().backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_a_confident_code_is_drawn_whatever_the_gumbel_noise_and_a_flat_one_spreads():
    peaked = torch.zeros(1, 1, 1, 16)
    peaked[..., 5] = 30.0
    for seed in range(20):
        assert int(straight_through(peaked, torch.Generator().manual_seed(seed), 4).flatten(-2).argmax()) == 5
    flat = torch.zeros(1, 1, 1, 16)
    drawn = {int(straight_through(flat, torch.Generator().manual_seed(seed), 4).flatten(-2).argmax())
             for seed in range(200)}
    assert len(drawn) >= 12                                                  # near-uniform over the 16 cells


def test_the_teachers_maps_of_a_clip_have_one_cell_per_slot_and_frame():
    maps = clip_maps(CodePosterior(channels=4, slots=2), torch.randn(3, 5, 4, 4, 4), torch.Generator().manual_seed(1))
    assert maps.shape == (3, 5, 2, 4, 4)
    torch.testing.assert_close(maps.detach().flatten(-2).sum(-1), torch.ones(3, 5, 2))


def test_the_posterior_labels_the_latent_cache_as_a_reader_would(tmp_path):
    from safetensors.torch import save_file

    episodes = [Episode(frames=np.random.default_rng(i).normal(size=(5, 4, 4, 4)).astype(np.float32),
                        actions=np.zeros(4, np.int64), rewards=np.zeros(4, np.float32), terminations=np.zeros(4, bool),
                        truncations=np.zeros(4, bool)) for i in range(3)]
    posterior = CodePosterior(channels=4, slots=2)
    codes = episode_codes(posterior, episodes[0], "cpu")
    assert codes.shape == (5, 2) and codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 16
    tensors = {}
    for split, part in (("train", episodes[:2]), ("val", episodes[2:])):
        offsets = np.cumsum([0] + [len(e.frames) for e in part])
        steps = np.cumsum([0] + [len(e.actions) for e in part])
        tensors.update({f"{split}/latents": torch.from_numpy(np.concatenate([e.frames for e in part])),
                        f"{split}/actions": torch.zeros(steps[-1], dtype=torch.int64),
                        f"{split}/rewards": torch.zeros(steps[-1]),
                        f"{split}/terminations": torch.zeros(steps[-1], dtype=torch.bool),
                        f"{split}/truncations": torch.zeros(steps[-1], dtype=torch.bool),
                        f"{split}/frame_offsets": torch.from_numpy(offsets),
                        f"{split}/step_offsets": torch.from_numpy(steps)})
    tensors.update({"n_actions": torch.tensor(3), "start/frames": torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8),
                    "start/actions": torch.zeros(1, 1, dtype=torch.int64)})
    save_file(tensors, str(tmp_path / "latents.safetensors"))
    write_codes(tmp_path, posterior, episodes[:2], episodes[2:], "cpu")
    data = load_latents(tmp_path)
    assert data.event_entities == 2
    assert np.array_equal(data.train[0].infos["event_cells"], codes)
    assert np.array_equal(data.val[0].infos["event_cells"], episode_codes(posterior, episodes[2], "cpu"))
