"""The state probe reads the player cell and the score of real frames after a short training."""
import numpy as np
import pytest

from train.probe.model import load_probe, save_probe
from train.probe.run import ProbeConfig, real_frames, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    probe, metrics = train(ProbeConfig(frames=3000, steps=300))
    path = save_probe(probe, tmp_path_factory.mktemp("probe") / "probe", metrics)
    return probe, metrics, path


def test_a_short_training_reads_held_out_player_cells_and_scores(trained):
    _, metrics, _ = trained
    assert metrics["player_acc"] >= 0.95 and metrics["score_acc"] >= 0.95


def test_saved_probe_reads_fresh_frames_like_the_trained_one(trained):
    probe, _, path = trained
    frames, players, scores = real_frames(200, seed=7)
    loaded = load_probe(path)
    got_players, got_scores = loaded.read(frames)
    assert np.array_equal(got_players, probe.read(frames)[0])
    assert (got_players == players).all(1).mean() >= 0.95 and (got_scores == scores).mean() >= 0.95


def test_a_missing_probe_says_how_to_train_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m train.probe"):
        load_probe(tmp_path / "none")
