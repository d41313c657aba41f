"""Painted cells: where two drawn entities meet (overlap_paint), the generated cell is a latent fitted to how the
decoder draws the recorded overlaps, since no DiT draws two sprites in one cell (docs/model.md "Overlap paint")."""
import sys
import types

import numpy as np
import pytest
import torch

from train.common.paint import fit_cell_latent, overlap_frames
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, DiTConfig
from worldmodel.events import cell_maps
from worldmodel.rollout import new_cache, next_chunk, prime


def test_overlap_paint_needs_two_entities_and_pairs_them_in_order():
    with pytest.raises(ValueError, match="overlap_paint"):
        DiTConfig(event_channels=1, event_outcomes=True, overlap_paint=True)
    assert DiTConfig(event_channels=3, overlap_paint=True).entity_pairs == [(0, 1), (0, 2), (1, 2)]


def test_only_the_cells_where_two_drawn_entities_meet_are_painted(perturbed_model):
    model = perturbed_model(event_channels=3, overlap_paint=True, chunk=1, window=3)
    with torch.no_grad():
        model.overlap_latents.copy_(torch.arange(12.0).reshape(3, 4))         # pairs (0, 1), (0, 2), (1, 2)
    latents = torch.zeros(2, 4, 4, 4)
    cells = torch.tensor([[5, 5, 9], [3, 7, 7]])                              # row 0: 0 on 1; row 1: 1 on 2
    painted = model.paint(latents, cell_maps(cells, 4))
    assert painted[0, :, 1, 1].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert painted[1, :, 1, 3].tolist() == [8.0, 9.0, 10.0, 11.0]
    painted[0, :, 1, 1] = 0.0
    painted[1, :, 1, 3] = 0.0
    assert not painted.any()                                                  # nothing else changed


def test_the_rollout_writes_the_painted_overlap_into_the_frame_and_the_cache(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, overlap_paint=True, chunk=1, window=3)
    with torch.no_grad():
        model.overlap_latents.copy_(torch.full((1, 4), 7.0))
    logits = torch.full((2, 2, 16), -30.0)
    logits[:, :, 6] = 30.0                                                    # both entities always drawn on cell 6
    model.event_model.cell_logits = lambda tokens: logits
    cache = new_cache(model, 2)
    prime(model, cache, torch.randn(2, 2, 4, 4, 4), torch.tensor([[5, 1], [5, 2]]))
    result = next_chunk(model, cache, torch.tensor([[3], [4]]), [1.0, 0.5], lambda s: torch.randn(s),
                        event_min_prob=0.0)
    assert (result.events[:, 0] == 6).all()
    assert (result.latents[:, 0, :, 1, 2] == 7.0).all()
    assert (cache.previous[:, :, 1, 2] == 7.0).all()                          # the next step reads the painted cell


def test_the_fitted_cell_latent_draws_the_recorded_cells_better_than_their_mean_encoding():
    torch.manual_seed(0)
    # each cell drawn from its latent
    autoencoder = Autoencoder(AutoencoderConfig(frame_size=32, latent_channels=4, widths=[8, 8, 8], decoder="cell",
                                                cell_width=16, cell_blocks=0)).eval()
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 16, 16)
    rows, cols = torch.from_numpy(cells // 4), torch.from_numpy(cells % 4)
    latents = torch.randn(16, 4, 4, 4)
    # the one latent of the recorded cells
    latents[torch.arange(16), :, rows, cols] = torch.tensor([1.5, -1.0, 0.5, 2.0])
    with torch.no_grad():
        frames = autoencoder.decode(latents).numpy()                                     # (16, 32, 32, 3) uint8
        target = autoencoder.to_float(torch.from_numpy(frames))

    def error(latent: torch.Tensor) -> float:
        with torch.no_grad():
            encoded = autoencoder.encode(torch.from_numpy(frames))
            encoded[torch.arange(16), :, rows, cols] = latent
            drawn = autoencoder.decode_float(encoded)
        return float(sum(((drawn - target)[n, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] ** 2).mean()
                         for n, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))))

    with torch.no_grad():
        mean = autoencoder.encode(torch.from_numpy(frames))[torch.arange(16), :, rows, cols].mean(0)
    fitted = torch.from_numpy(fit_cell_latent(autoencoder, frames, cells, steps=200))
    assert fitted.shape == (4,)
    assert error(fitted) < 0.1 * error(mean)
    assert all(not p.requires_grad for p in autoencoder.parameters())        # the decoder is only read
    with pytest.raises(ValueError, match="recorded frames"):
        fit_cell_latent(autoencoder, frames[:0], cells[:0])


def test_overlap_frames_are_the_frames_where_the_two_entities_share_a_cell():
    frames = np.arange(4)[:, None, None, None] * np.ones((4, 2, 2, 3), np.uint8)
    cells = np.array([[3, 3, 1], [3, 4, 4], [-1, -1, 2], [9, 9, 9]])
    picked, where = overlap_frames(frames, cells, (0, 1))
    assert picked[:, 0, 0, 0].tolist() == [0, 3] and where.tolist() == [3, 9]
    assert overlap_frames(frames, cells, (1, 2))[1].tolist() == [4, 9]
    assert len(overlap_frames(frames, cells, (0, 1), limit=1)[0]) == 1


def test_the_cells_a_model_paints_carry_no_loss_in_training():
    from train.common.dit_stage import DiTStageConfig, loss_cells

    latents = torch.zeros(1, 2, 4, 4, 4)
    cells = torch.tensor([[[5, 5, 0], [3, 7, -1]]])                            # frame 0: cells 0 and 1 meet on 5
    events = cell_maps(cells, 4)                                               # (1, 2, 3, 4, 4)
    plain = loss_cells(latents, events, DiTStageConfig(change_weight=1.0))
    painting = loss_cells(latents, events, DiTStageConfig(change_weight=1.0, paint_overlaps=True))
    assert plain.shape == painting.shape == (1, 2, 1, 4, 4) and bool((plain == 1).all())
    assert painting[0, 0, 0, 1, 1] == 0 and painting[0, 0].sum() == 15         # only the overlap cell
    assert bool((painting[0, 1] == 1).all())                                   # frame 1: no two cells meet
    assert loss_cells(latents, None, DiTStageConfig(paint_overlaps=True)).shape == (1, 2, 1, 4, 4)


def test_self_forcing_matches_no_distribution_where_the_rollout_paints():
    from train.stages.self_forcing import unpainted

    real, fake = torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)
    painted = torch.zeros(1, 1, 1, 2, 2, dtype=torch.bool)
    painted[..., 0, 1] = True
    got_real, got_fake = unpainted(real, fake, painted)
    assert got_fake is fake and got_real[..., 0, 1].eq(1).all() and got_real.sum() == 2    # both channels of one cell
    assert unpainted(real, fake, None)[0] is real


def test_the_pipeline_wires_overlap_painting_into_every_dit_stage_of_a_game_with_entities(tmp_path):
    from train.common.cli import compose
    from train.pipeline import PipelineConfig, stage_overrides

    def wiring(**kw):
        cfg = compose("pipeline", PipelineConfig, [f"root={tmp_path}", "stages=[events,teacher,ode_init,self_forcing]"]
                      + [f"{k}={v}" for k, v in kw.items()])
        return {s: "paint_overlaps=true" in stage_overrides(cfg, s) for s in ("teacher", "ode_init", "self_forcing")}

    assert all(wiring().values())
    assert not any(wiring(paint_overlaps="false").values())
    assert not any(wiring(reader="").values())                               # no entities, nothing meets


def test_only_the_recorded_frames_where_two_entities_meet_are_kept_for_the_fit(monkeypatch):
    from train.common.paint import recorded_overlaps
    from worldmodel.data import Episode

    frames = np.arange(4)[:, None, None, None] * np.ones((4, 2, 2, 3), np.uint8)        # frame k is all k
    episode = Episode(frames=frames, actions=np.zeros(3, np.int64), rewards=np.zeros(3, np.float32),
                      terminations=np.zeros(3, bool), truncations=np.zeros(3, bool))
    labels = np.array([[3, 3], [3, 4], [-1, -1], [9, 9]])                                # frames 0 and 3 overlap
    fake = types.ModuleType("fake_paint_reader")
    fake.cells = lambda f: labels[f[:, 0, 0, 0]]
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    kept, cells = recorded_overlaps([episode], fake.__name__)
    assert kept[:, 0, 0, 0].tolist() == [0, 3] and cells.tolist() == [[3, 3], [9, 9]]
