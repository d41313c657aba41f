"""Recording any game: the default policy plays any Discrete(n) env, a frame budget caps a recording, an env whose
observation is no image is recorded from render(), an existing Minari dataset is converted, and an ALE game records
where ale-py is installed."""
import numpy as np
import pytest

from train.common.cli import compose
from train.stages.record import RecordConfig, record
from worldmodel.data import load_episodes


def recorded(tmp_path, dataset_id, *overrides):
    record(compose("record", RecordConfig, [f"root={tmp_path}", f"dataset_id={dataset_id}", "progress=false",
                                            *overrides]))
    return load_episodes(dataset_id, tmp_path)


def test_a_frame_budget_cuts_the_recording_and_marks_the_last_episode_truncated(tmp_path):
    episodes, n_actions = recorded(tmp_path, "cc/random-v0", "frames=300", "episodes=1000")
    assert sum(len(e.actions) for e in episodes) == 300 and n_actions == 5
    assert episodes[-1].truncations[-1] and not episodes[-1].terminations[-1]


def test_recording_without_an_env_id_is_a_clear_error(tmp_path):
    assert RecordConfig().env_id == ""
    with pytest.raises(ValueError, match="env_id is empty"):
        recorded(tmp_path, "none/random-v0", "env_id=''")
    assert not (tmp_path / "none").exists()


def test_the_random_policy_records_a_game_with_other_actions_and_render_only_records_render_frames(tmp_path):
    episodes, n_actions = recorded(tmp_path, "cartpole/random-v0", "env_id=CartPole-v1", "render_only=true",
                                   "episodes=2")
    assert n_actions == 2 and len(episodes) == 2
    frames = np.concatenate([e.frames for e in episodes])
    assert frames.shape[1:] == (64, 64, 3) and frames.dtype == np.uint8
    assert len(np.unique(frames.reshape(-1, 3), axis=0)) > 2        # the drawn cart and pole, not a blank
    with pytest.raises(ValueError, match="RGB frames"):            # without render_only its observation is a vector
        recorded(tmp_path, "cartpole/state-v0", "env_id=CartPole-v1", "episodes=1")


def test_an_existing_minari_dataset_converts_to_a_recording_with_resized_frames(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))      # where minari.load_dataset looks
    source, _ = recorded(tmp_path, "cc/source-v0", "episodes=4")
    copy, n_actions = recorded(tmp_path, "cc/copy-v0", "from_dataset=cc/source-v0", "resize_to=32")
    assert n_actions == 5 and len(copy) == len(source)
    for a, b in zip(source, copy, strict=True):
        assert b.frames.shape[1:] == (32, 32, 3) and len(b.frames) == len(a.frames)
        for name in ("actions", "rewards", "terminations", "truncations"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    with pytest.raises(ValueError, match="minari cannot open"):
        recorded(tmp_path, "cc/none-v0", "from_dataset=cc/missing-v0")


def test_an_atari_game_records_through_the_same_stage(tmp_path):
    pytest.importorskip("ale_py")
    episodes, n_actions = recorded(tmp_path, "pong/random-v0", "env_id=ALE/Pong-v5", "frames=50")
    assert n_actions == 6 and episodes[0].frames.shape[1:] == (64, 64, 3)


def test_the_pipeline_trains_from_an_existing_minari_dataset(tmp_path, monkeypatch):
    from train.pipeline import PipelineConfig, run

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    recorded(tmp_path / "minari", "someone/catch-v0", "env_id=dreamgym/Catch-v0", "episodes=3")
    cfg = compose("pipeline", PipelineConfig, [f"root={tmp_path}/runs", f"data_root={tmp_path}/data", "preset=tiny",
                                               "progress=false", "game=catch", "env_id=dreamgym/Catch-v0",
                                               "from_dataset=someone/catch-v0", "stages=[record,autoencoder]"])
    outputs = run(cfg)
    episodes, n_actions = load_episodes("catch/imported-v0", tmp_path / "data")
    assert n_actions == 3 and len(episodes) == 3 and "autoencoder" in outputs
