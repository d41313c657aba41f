"""Entity reach (DiTConfig.event_reach): an entity never lands further from its last drawn cell than the recording
ever saw it move in one frame; the events stage measures the reach, installs it, and the rollout keeps each row's
last draw in the KV cache (docs/model.md "Entity reach (`DiTConfig.event_reach`)")."""
import numpy as np
import pytest
import torch

from worldmodel.config import DiTConfig
from worldmodel.events import observed_reach, reachable
from worldmodel.rollout import new_cache, next_chunk, prime

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_reachable_cells_are_those_within_the_reach_of_the_last_draw():
    last = torch.tensor([[5, 5, -1]])                  # 4x4 grid: cell 5 is (1, 1); the third entity has no last draw
    allowed = reachable(last, torch.tensor([1, -1, 1]), 4)           # (1, 3, 16)
    assert sorted(torch.nonzero(allowed[0, 0]).flatten().tolist()) == [1, 4, 5, 6, 9]
    assert bool(allowed[0, 1].all()) and bool(allowed[0, 2].all())     # -1: anywhere; no last draw: anywhere


def test_observed_reach_is_the_largest_recorded_move_and_a_respawn_is_anywhere():
    # columns: an enemy stepping one cell, a coin that respawns across the grid, a player seen only sometimes
    episode = np.array([[0, 0, 10], [1, 0, -1], [2, 63, 27], [3, 63, 28]])
    assert observed_reach([episode], 8, anywhere=2) == [1, -1, 1]
    assert observed_reach([episode[:2]], 8, anywhere=2) == [1, 0, -1]     # never seen twice in a row: anywhere


def test_the_reach_needs_one_entry_per_drawn_cell():
    with pytest.raises(ValueError, match="one entry per drawn cell"):
        DiTConfig(event_channels=2, event_reach=[1, -1, 1])
    DiTConfig(event_channels=2, event_outcomes=True, event_player=True, player_channel=True, event_reach=[1, -1, 1])


def test_the_rollout_never_draws_an_entity_or_the_player_out_of_reach_of_its_last_draw(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, event_player=True, player_channel=True, chunk=1,
                            window=3, event_reach=[1, -1, 1])
    far = torch.full((2, 2, 16), -30.0)
    far[:, 0, 15] = 30.0                               # the event model wants the enemy in the far corner...
    far[:, 0, 1] = 0.0                                 # ... and a little next to its start
    far[:, 1, 15] = 30.0                               # the coin too (it may go anywhere)
    player = torch.full((2, 16), -30.0)
    player[:, 0], player[:, 15] = 0.0, 30.0            # the player head: the far corner, else cell 0
    model.event_model.cell_logits = lambda tokens: far
    model.event_model.player_logits = lambda tokens: player
    cache = new_cache(model, 2)
    prime(model, cache, torch.randn(2, 2, 4, 4, 4), torch.tensor([[5, 1], [5, 2]]))
    step = lambda: next_chunk(model, cache, torch.tensor([[3], [4]]), [1.0, 0.5], lambda s: torch.randn(s),  # noqa: E731
                              event_min_prob=0.0).events[:, 0].tolist()
    assert step() == [[15, 15, 15]] * 2                # right after a reset nothing is known: anywhere
    cache.cells[:] = torch.tensor([[0, 0, 0]])         # now say every entity was last drawn on cell 0
    assert step() == [[1, 15, 0]] * 2                  # the enemy and the player within one cell; the coin anywhere
    prime(model, cache, torch.randn(1, 2, 4, 4, 4), torch.tensor([[5, 1]]), rows=np.array([0]))
    assert cache.cells[0].tolist() == [-1, -1, -1] and cache.cells[1].tolist() == [1, 15, 0]   # a reset forgets


def test_installing_an_event_model_gives_the_dit_its_reach_cut_to_the_drawn_cells(perturbed_model):
    from train.common.dit_stage import install_event_model

    model = perturbed_model(event_channels=2, event_outcomes=True, event_player=True, chunk=1, window=3)
    installed = install_event_model(model, model.event_model, [1, -1, 1])
    assert installed.config.event_reach == [1, -1] and installed.reach.tolist() == [1, -1]   # no player channel
    assert not any(p.requires_grad for p in installed.event_model.parameters())             # still frozen
    assert install_event_model(installed, model.event_model, []).config.event_reach == []
