"""The loss weights the DiT stages share: frames without a known previous frame, frames that end an episode by
termination, changed cells, rare events."""
import torch

from train.common.dit_stage import change_weights, flow_loss, flow_weights, head_loss, known_previous
from worldmodel.dit import DiTOutput

NULL = 5


def test_a_clip_cut_inside_an_episode_gets_no_loss_on_its_first_frame():
    actions = torch.tensor([[NULL, 1, 2], [3, 1, 2]])
    assert known_previous(actions, NULL).tolist() == [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]


def test_cells_around_the_previous_frames_sprites_weigh_more():
    latents = torch.zeros(1, 4, 3, 5, 5)
    latents[0, 1:3, :, 2, 2] = 1.0                                 # a sprite appears in frame 1, stays in frame 2 ...
    cells = change_weights(latents, 20.0, reach=1)                 # ... and is gone in frame 3
    assert cells.shape == (1, 4, 1, 5, 5)
    assert torch.all(cells[0, 1] == 1.0)                           # frame 1 is predicted from a frame without it
    for frame in (2, 3):                                           # where it can be after one more frame
        assert (cells[0, frame, 0, 1:4, 1:4] == 20.0).all() and cells[0, frame].sum() == 9 * 20.0 + 16
    assert torch.all(change_weights(latents, 1.0) == 1.0)


def test_reach_zero_weighs_only_the_previous_frames_sprite_cells():
    latents = torch.zeros(1, 5, 3, 4, 4)
    latents[0, 1:3, :, 2, 3] = 1.0
    cells = change_weights(latents, 20.0, reach=0)
    assert cells[0, 2, 0, 2, 3] == 20.0 and cells[0, 2].sum() == 20.0 + 15


def test_the_weight_never_depends_on_the_frame_being_predicted():
    """A weight read off the target would move the squared error's optimum (sprites drawn where they may go)."""
    g = torch.Generator().manual_seed(0)
    latents = torch.zeros(2, 4, 3, 6, 6)
    latents[:, :, :, 3, 3] = 1.0                                   # a sprite at rest ...
    other = latents.clone()
    other[:, 3] = torch.randn(other[:, 3].shape, generator=g)      # ... whatever the last frame holds
    torch.testing.assert_close(change_weights(latents, 20.0)[:, 3], change_weights(other, 20.0)[:, 3])


def test_weighted_flow_loss_is_the_plain_loss_when_every_cell_weighs_the_same():
    g = torch.Generator().manual_seed(0)
    velocity, latents, noise = (torch.randn(2, 3, 4, 4, 4, generator=g) for _ in range(3))
    plain = flow_loss(velocity, latents, noise)
    torch.testing.assert_close(flow_loss(velocity, latents, noise, cells=torch.full((2, 3, 1, 4, 4), 7.0)), plain)


def test_rare_events_weigh_more_in_the_head_loss():
    batch = {"rewards": torch.tensor([[0.0, 1.0]]), "terminations": torch.zeros(1, 2)}
    wrong_on_event = DiTOutput(None, torch.tensor([[0.0, 0.0]]), torch.full((1, 2), -20.0), None)
    wrong_elsewhere = DiTOutput(None, torch.tensor([[1.0, 1.0]]), torch.full((1, 2), -20.0), None)
    assert head_loss(wrong_on_event, batch, 1.0) == head_loss(wrong_elsewhere, batch, 1.0)
    assert head_loss(wrong_on_event, batch, 10.0) > head_loss(wrong_elsewhere, batch, 10.0)


def test_a_clip_cut_inside_an_episode_has_no_flow_loss_on_its_first_frame():
    batch = {"actions": torch.tensor([[NULL, 1, 2], [3, 1, 2]]),
             "terminations": torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}
    assert torch.equal(flow_weights(batch, NULL), torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
    assert torch.equal(flow_weights(batch, NULL), known_previous(batch["actions"], NULL))
