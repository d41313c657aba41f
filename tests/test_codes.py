"""Learned codes (train.stages.codes): for a game without a reader, the cells a surprise model cannot predict from
the past and the keys label the latent cache in a reader's place, "nowhere" (K) on frames where nothing random
happens; the event model can then draw an entity nowhere."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from train.common.cli import compose
from train.common.latents import load_latents
from train.stages.codes import CodesStageConfig, main, otsu_threshold, pick_codes, surprise_threshold
from worldmodel.data import Episode
from worldmodel.events import EventModel, cell_maps, observed_reach, reachable, sample_cells

SIZE = 4                       # latent cells per side: K = 16


def falling_ball_episode(seed: int, steps: int = 40) -> tuple[Episode, list[tuple[int, int]]]:
    """A one-channel latent 'ball' that falls a row a frame and, after the bottom row, appears on the top row in a
    random column; returns the episode and its respawns (frame, cell)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((steps + 1, 1, SIZE, SIZE), np.float32)
    row, col, respawns = 0, int(rng.integers(SIZE)), []
    for t in range(steps + 1):
        if t and row == SIZE - 1:
            row, col = 0, int(rng.integers(SIZE))
            respawns.append((t, col))
        elif t:
            row += 1
        frames[t, 0, row, col] = 3.0
    return Episode(frames=frames, actions=rng.integers(0, 2, steps), rewards=np.zeros(steps, np.float32),
                   terminations=np.zeros(steps, bool), truncations=np.zeros(steps, bool)), respawns


def write_cache(directory, train: list[Episode], val: list[Episode]) -> None:
    """A latent cache in the autoencoder stage's format (train.common.latents)."""
    tensors = {"n_actions": torch.tensor(2), "start/frames": torch.zeros(1, 1, 64, 64, 3, dtype=torch.uint8),
               "start/actions": torch.zeros(1, 1, dtype=torch.int64)}
    for split, part in (("train", train), ("val", val)):
        steps = np.cumsum([0] + [len(e.actions) for e in part])
        tensors.update({f"{split}/latents": torch.from_numpy(np.concatenate([e.frames for e in part])),
                        f"{split}/actions": torch.from_numpy(np.concatenate([e.actions for e in part])),
                        f"{split}/rewards": torch.zeros(steps[-1]),
                        f"{split}/terminations": torch.zeros(steps[-1], dtype=torch.bool),
                        f"{split}/truncations": torch.zeros(steps[-1], dtype=torch.bool),
                        f"{split}/frame_offsets": torch.from_numpy(np.cumsum([0] + [len(e.frames) for e in part])),
                        f"{split}/step_offsets": torch.from_numpy(steps)})
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "latents.safetensors"))


def test_otsu_splits_two_groups_and_a_game_the_past_fixes_has_no_surprise():
    values = np.concatenate([np.full(90, -1.0), np.full(10, 2.0)])
    split, gap = otsu_threshold(values)
    assert -1.0 < split < 2.0 and gap == pytest.approx(3.0, abs=0.05)
    quiet = torch.from_numpy(np.random.default_rng(0).uniform(0.9, 1.1, (200, 16)))   # no frame stands out
    assert surprise_threshold(quiet, min_separation=1.0) == float("inf")
    loud = quiet.clone()
    loud[::10, 3] = 100.0
    assert 1.1 < surprise_threshold(loud, min_separation=1.0) < 100.0


def test_codes_are_the_most_surprising_cells_apart_from_each_other_and_nowhere_when_nothing_surprises():
    errors = torch.zeros(3, 16)
    errors[0, 5], errors[0, 6], errors[0, 15] = 9.0, 8.0, 7.0     # 6 is 5's neighbour: the second slot takes 15
    errors[1, 2] = 9.0                                           # one surprise: the second slot is nowhere
    codes = pick_codes(errors, slots=2, threshold=1.0, latent_size=SIZE, neighbours=1)
    assert codes.tolist() == [[5, 15], [2, 16], [16, 16]]


def test_the_codes_stage_labels_every_respawn_where_it_lands_and_the_quiet_frames_nowhere(tmp_path):
    episodes = [falling_ball_episode(seed) for seed in range(12)]
    write_cache(tmp_path / "ae/latents", [e for e, _ in episodes[:10]], [e for e, _ in episodes[10:]])
    cfg = compose("codes", CodesStageConfig, [f"autoencoder_dir={tmp_path}/ae", f"run_dir={tmp_path}/codes",
                                              "width=16", "loop.max_steps=400", "loop.progress=false", "slots=1"])
    figures = main(cfg)
    data = load_latents(tmp_path / "ae/latents")
    assert data.event_entities == 1
    for episode, (_, respawns) in zip(data.train + data.val, episodes, strict=True):
        cells = episode.infos["event_cells"][:, 0]
        assert cells[0] == SIZE * SIZE                                     # no frame before the first
        for t, col in respawns:
            assert cells[t] == col                                         # row 0, the new column
        quiet = np.ones(len(cells), bool)
        quiet[[t for t, _ in respawns]] = False
        assert (cells[quiet] == SIZE * SIZE).mean() > 0.9
    assert 0 < figures["coded_frames_slot0"] < 0.5
    assert (tmp_path / "codes/checkpoint/surprise_model.safetensors").is_file()
    # a rerun keeps the labels; a cache re-encoded since (its codes gone) is labelled again
    labels = tmp_path / "ae/latents/events.safetensors"
    stamp = labels.stat().st_mtime_ns
    assert main(cfg).items() <= figures.items() and labels.stat().st_mtime_ns == stamp
    labels.unlink()
    main(cfg)
    assert labels.is_file()


def test_an_event_model_with_nowhere_draws_it_as_an_empty_map_and_nowhere_is_never_out_of_reach():
    model = EventModel(latent_channels=2, latent_size=SIZE, n_actions=3, entities=2, dim=16, depth=1, none=True)
    logits = model(torch.randn(5, 2, SIZE, SIZE), torch.zeros(5, dtype=torch.int64))
    assert logits.shape == (5, 2, SIZE * SIZE + 1)
    certain = torch.full((1, 1, SIZE * SIZE + 1), -30.0)
    certain[..., -1] = 30.0
    cell = sample_cells(certain, torch.randn(1, 1, SIZE * SIZE + 1))
    assert int(cell) == SIZE * SIZE and not bool(cell_maps(cell, SIZE).any())
    # after a draw of nowhere, the next may land anywhere, as after a reset
    allowed = reachable(torch.tensor([[SIZE * SIZE]]), torch.tensor([0]), SIZE)
    assert bool(allowed.all())
    # and nowhere is never counted as a move
    assert observed_reach([np.array([[0], [SIZE * SIZE], [15]])], SIZE, anywhere=2) == [-1]
