"""The player's cell as an event channel (DiTConfig.player_channel): the event model's player head says where the
player will be, every generated frame is given that cell, and where the enemy lands on it (the catch) the frame is
painted like any other overlap (docs/model.md "Player channel")."""
import sys
import types

import numpy as np
import pytest
import torch

from train.common.events import add_dit_cells, attach_events
from worldmodel.config import DiTConfig
from worldmodel.data import Episode
from worldmodel.events import cell_maps
from worldmodel.rollout import new_cache, next_chunk, prime


def test_the_player_channel_needs_the_player_head_and_adds_a_drawn_cell_and_its_pairs():
    with pytest.raises(ValueError, match="player head"):
        DiTConfig(event_channels=2, event_outcomes=True, player_channel=True)
    config = DiTConfig(event_channels=2, event_outcomes=True, event_player=True, player_channel=True)
    assert config.drawn_cells == 3                                                   # enemy, coin, player
    assert config.entity_pairs == [(0, 1), (0, 2), (1, 2)]
    assert DiTConfig(event_channels=1, event_player=True, player_channel=True,
                     overlap_paint=True).entity_pairs == [(0, 1)]


def test_the_drawn_player_cell_is_the_player_heads_likeliest_and_comes_after_the_entities(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, event_player=True, player_channel=True, chunk=1,
                            window=3)
    previous, actions = torch.randn(2, 4, 4, 4), torch.tensor([3, 4])
    gaussian = torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(0))
    cells, maps, _ = model.sample_events(previous, actions, gaussian)
    head = model.event_model.player_logits(model.event_model.tokens(previous, actions)).argmax(-1)
    assert cells.shape == (2, 3) and maps.shape == (2, 3, 4, 4)
    assert torch.equal(cells[:, 2], head) and torch.equal(maps, cell_maps(cells, 4))
    lit = maps.clone()
    lit[:, 2] = torch.roll(maps[:, 2], 1, dims=-1)
    x, noisy = torch.randn(2, 1, 4, 4, 4), torch.full((2, 1), 0.5)
    assert not torch.allclose(model(x, noisy, actions[:, None], events=maps[:, None]).velocity,
                              model(x, noisy, actions[:, None], events=lit[:, None]).velocity)   # the DiT hears it


def test_the_enemy_on_the_player_is_painted_and_a_pair_never_recorded_is_not(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, event_player=True, player_channel=True,
                            overlap_paint=True, chunk=1, window=3)
    with torch.no_grad():
        model.overlap_latents.copy_(torch.tensor([[1.0] * 4, [2.0] * 4, [float("nan")] * 4]))  # coin-player: none
    cells = torch.tensor([[5, 9, 5], [3, 7, 7]])     # row 0: the enemy on the player; row 1: the player on the coin
    painted = model.paint(torch.zeros(2, 4, 4, 4), cell_maps(cells, 4))
    assert painted[0, :, 1, 1].tolist() == [2.0] * 4 and painted[0].abs().sum() == 8
    assert not painted[1].any() and not painted.isnan().any()


def test_the_rollout_draws_the_catch_where_the_enemy_lands_on_the_players_cell(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, event_player=True, player_channel=True,
                            overlap_paint=True, chunk=1, window=3)
    with torch.no_grad():
        model.overlap_latents.copy_(torch.tensor([[1.0] * 4, [7.0] * 4, [float("nan")] * 4]))
    logits = torch.full((2, 2, 16), -30.0)
    logits[:, 0, 6] = 30.0                                                   # the enemy always drawn on cell 6
    logits[:, 1, 0] = 30.0                                                   # the coin on cell 0
    player = torch.full((2, 16), -30.0)
    player[0, 6] = player[1, 2] = 30.0                                       # row 0's player on 6 too: a catch
    model.event_model.cell_logits = lambda tokens: logits
    model.event_model.player_logits = lambda tokens: player
    cache = new_cache(model, 2)
    prime(model, cache, torch.randn(2, 2, 4, 4, 4), torch.tensor([[5, 1], [5, 2]]))
    result = next_chunk(model, cache, torch.tensor([[3], [4]]), [1.0, 0.5], lambda s: torch.randn(s),
                        event_min_prob=0.0)
    assert result.events[:, 0].tolist() == [[6, 0, 6], [6, 0, 2]]
    assert (result.latents[0, 0, :, 1, 2] == 7.0).all() and not (result.latents[1, 0, :, 1, 2] == 7.0).all()


def test_training_labels_put_the_player_after_the_entities():
    episode = Episode(frames=np.zeros((4, 1, 1, 1), np.float32), actions=np.zeros(3, np.int64),
                      rewards=np.zeros(3, np.float32), terminations=np.array([False, False, True]),
                      truncations=np.zeros(3, bool))
    attach_events([episode], torch.arange(8).view(4, 2), player_cell=torch.tensor([9, 8, -1, 6]))
    add_dit_cells([episode], player=True)
    assert episode.infos["event_cells"].tolist() == [[0, 1, 9], [2, 3, 8], [4, 5, -1], [6, 7, 6]]
    unlabelled = Episode(frames=np.zeros((2, 1, 1, 1), np.float32), actions=np.zeros(1, np.int64),
                         rewards=np.zeros(1, np.float32), terminations=np.zeros(1, bool), truncations=np.zeros(1, bool))
    attach_events([unlabelled], torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="player_cell"):
        add_dit_cells([unlabelled], player=True)


def test_the_recorded_overlaps_include_the_enemy_on_the_player(monkeypatch):
    from train.common.paint import overlap_frames, recorded_overlaps

    frames = np.arange(3)[:, None, None, None] * np.ones((3, 2, 2, 3), np.uint8)        # frame k is all k
    episode = Episode(frames=frames, actions=np.zeros(2, np.int64), rewards=np.zeros(2, np.float32),
                      terminations=np.zeros(2, bool), truncations=np.zeros(2, bool))
    fake = types.ModuleType("fake_player_reader")
    fake.cells = lambda f: np.array([[3, 5], [3, 4], [2, 1]])[f[:, 0, 0, 0]]
    fake.player_cells = lambda f: np.array([0, 3, 7])[f[:, 0, 0, 0]]
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    kept, cells = recorded_overlaps([episode], fake.__name__)
    assert kept[:, 0, 0, 0].tolist() == [1] and cells.tolist() == [[3, 4, 3]]        # frame 1: the enemy on the player
    assert overlap_frames(kept, cells, (0, 2))[1].tolist() == [3] and not len(overlap_frames(kept, cells, (1, 2))[0])


def test_the_pipeline_wires_the_player_channel_and_trains_on_play_after_catches(tmp_path):
    from train.common.cli import compose
    from train.common.dit_stage import DiTStageConfig, check_teacher_events
    from train.pipeline import PipelineConfig, stage_overrides

    def cfg(**kw):
        return compose("pipeline", PipelineConfig, [f"root={tmp_path}", "baselines=true"]
                       + [f"{k}={v}" for k, v in kw.items()])

    on, off = cfg(), cfg(player="false")
    for stage in ("teacher", "ode_init", "self_forcing", "tf", "df"):
        assert "player_channel=true" in stage_overrides(on, stage)
        assert "player_channel=true" not in stage_overrides(off, stage)
    assert "player=True" in stage_overrides(on, "events") and "player=False" in stage_overrides(off, "events")
    assert "cache_datasets=[coinchase/mixed-events-v0]" in stage_overrides(on, "autoencoder")
    assert not [o for o in stage_overrides(off, "autoencoder") if o.startswith("cache_datasets")]
    teacher = DiTConfig(event_channels=2, event_outcomes=True, event_player=True, player_channel=True)
    check_teacher_events(DiTStageConfig(player_channel=True), teacher)
    with pytest.raises(ValueError, match="player_channel=True"):
        check_teacher_events(DiTStageConfig(), teacher)
