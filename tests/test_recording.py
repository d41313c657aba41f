"""Recording real games into Minari datasets: lossless, aligned, crash safe, clear about bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs import BUNDLED_ENV_ID
from envs.coinchase import ACTION_DELTAS, CoinChaseEnv, is_free
from envs.policies import CoinSeekerPolicy, RandomPersistentPolicy, make_policy
from envs.recording import RecordMinari, make_env
from train.stages.record import RecordConfig, record
from worldmodel.data import load_episodes

REPO = Path(__file__).resolve().parents[1]
DATASET = "coinchase/test-v0"


def play(env: gym.Env, episodes: int, seed: int = 0) -> list[dict]:
    """Step `env` with a persistent random policy; return what the test saw, per episode."""
    policy = RandomPersistentPolicy(env.action_space.n, 1, 4, np.random.default_rng(seed))
    seen = []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        record = {"frames": [obs.copy()], "actions": [], "rewards": [], "terminations": [], "players": [info["player"]]}
        done = False
        while not done:
            action = policy(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            record["frames"].append(obs.copy())
            record["actions"].append(action)
            record["rewards"].append(reward)
            record["terminations"].append(terminated)
            record["players"].append(info["player"])
            done = terminated or truncated
        seen.append(record)
    return seen


def test_recorded_frames_round_trip_exactly(tmp_path):
    recorder = RecordMinari(CoinChaseEnv(horizon=30), DATASET, tmp_path)
    seen = play(recorder, episodes=3)
    recorder.close()

    episodes, n_actions = load_episodes(DATASET, tmp_path)
    assert n_actions == 5
    assert len(episodes) == 3
    for episode, expected in zip(episodes, seen, strict=True):
        assert episode.frames.dtype == np.uint8 and episode.frames.shape[1:] == (64, 64, 3)
        np.testing.assert_array_equal(episode.frames, np.stack(expected["frames"]))   # lossless, no JPEG
        np.testing.assert_array_equal(episode.actions, expected["actions"])
        np.testing.assert_array_equal(episode.rewards, expected["rewards"])
        np.testing.assert_array_equal(episode.terminations, expected["terminations"])
        assert episode.truncations[-1] or episode.terminations[-1]
        np.testing.assert_array_equal(episode.infos["player"], np.stack(expected["players"]))   # n+1 infos


def test_dataset_metadata_is_minari_layout(tmp_path):
    from minari.dataset.minari_storage import MinariStorage
    from minari.serialization import deserialize_space

    recorder = RecordMinari(gym.make("dreamgym/CoinChase-v0", horizon=10), DATASET, tmp_path)
    play(recorder, episodes=2)
    path = recorder.finalize()

    assert path == tmp_path / DATASET
    meta = MinariStorage.read_raw_metadata(path / "data")
    assert meta["dataset_id"] == DATASET and meta["data_format"] == "hdf5" and meta["jpeg_encoding"] is False
    assert meta["total_episodes"] == 2
    assert deserialize_space(meta["observation_space"]) == spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert deserialize_space(meta["action_space"]) == spaces.Discrete(5)
    assert json.loads(meta["env_spec"])["id"] == "dreamgym/CoinChase-v0"


def test_minari_load_dataset_reads_the_recording(tmp_path, monkeypatch):
    pytest.importorskip("PIL", reason="minari 0.5.4's HDF5 reader imports Pillow")
    import minari

    recorder = RecordMinari(CoinChaseEnv(horizon=10), DATASET, tmp_path)
    seen = play(recorder, episodes=2)
    recorder.close()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    dataset = minari.load_dataset(DATASET)
    assert dataset.total_episodes == 2
    for episode, expected in zip(dataset.iterate_episodes(), seen, strict=True):
        np.testing.assert_array_equal(episode.observations, np.stack(expected["frames"]))
        np.testing.assert_array_equal(episode.actions, expected["actions"])


def test_recording_survives_sigkill(tmp_path):
    command = [sys.executable, "-m", "train.stages.record", "episodes=100000", f"root={tmp_path}",
               f"dataset_id={DATASET}", "progress=false"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    namespace = tmp_path / "coinchase"
    try:
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in namespace.glob(".test-v0.staging-*/data/main_data.hdf5")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the recorder never started writing"
            time.sleep(0.05)
        time.sleep(0.2)   # well inside the recording
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()

    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / DATASET).exists()
    assert list(namespace.glob(".test-v0.staging-*")), "the killed run left its staging dir"

    path = record(RecordConfig(env_id=BUNDLED_ENV_ID,
                               episodes=2, root=str(tmp_path), dataset_id=DATASET, progress=False))
    assert path == tmp_path / DATASET
    assert not list(namespace.glob(".test-v0.staging-*")), "the next run cleans up after the dead one"
    assert len(load_episodes(DATASET, tmp_path)[0]) == 2


def test_existing_dataset_is_refused_and_overwrite_replaces_it(tmp_path):
    first = RecordConfig(env_id=BUNDLED_ENV_ID, episodes=2, root=str(tmp_path), dataset_id=DATASET, progress=False)
    record(first)
    with pytest.raises(FileExistsError, match=f"{DATASET}.*{tmp_path}"):
        record(RecordConfig(env_id=BUNDLED_ENV_ID, episodes=3, root=str(tmp_path), dataset_id=DATASET, progress=False))
    assert len(load_episodes(DATASET, tmp_path)[0]) == 2

    record(RecordConfig(env_id=BUNDLED_ENV_ID,
                        episodes=3, root=str(tmp_path), dataset_id=DATASET, overwrite=True, progress=False))
    assert len(load_episodes(DATASET, tmp_path)[0]) == 3
    assert sorted(p.name for p in (tmp_path / "coinchase").iterdir()) == ["namespace_metadata.json", "test-v0"]


def test_overwrite_interrupted_between_renames_is_repaired(tmp_path):
    record(RecordConfig(env_id=BUNDLED_ENV_ID, episodes=2, root=str(tmp_path), dataset_id=DATASET, progress=False))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    old = tmp_path / "coinchase" / f".test-v0.old-{int(dead.stdout)}-abcd"
    (tmp_path / DATASET).rename(old)   # as if killed after moving the old dataset aside

    recorder = RecordMinari(CoinChaseEnv(horizon=5), "coinchase/other-v0", tmp_path)
    recorder.abort()
    assert not (tmp_path / DATASET).exists(), "only the recorded id's own leftovers are touched"
    recorder = RecordMinari(CoinChaseEnv(horizon=5), DATASET, tmp_path, overwrite=True)
    assert len(load_episodes(DATASET, tmp_path)[0]) == 2, "the old dataset is back"
    recorder.abort()


def test_record_is_reproducible_and_keeps_episode_seeds(tmp_path):
    for name in ("a-v0", "b-v0"):
        record(RecordConfig(env_id=BUNDLED_ENV_ID,
                            episodes=3, root=str(tmp_path), dataset_id=f"coinchase/{name}", seed=7, progress=False))
    first, _ = load_episodes("coinchase/a-v0", tmp_path)
    second, _ = load_episodes("coinchase/b-v0", tmp_path)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.actions, b.actions)
    meta = json.loads((tmp_path / "coinchase/a-v0/data/metadata.json").read_text())
    assert meta["dreamgym"]["record"]["seed"] == 7 and meta["algorithm_name"] == "dreamgym/random"


def test_reset_mid_episode_and_close_mark_the_open_episode_truncated(tmp_path):
    recorder = RecordMinari(CoinChaseEnv(horizon=1000, chase_prob=0.0), DATASET, tmp_path)
    recorder.reset(seed=0)
    recorder.step(0)
    recorder.reset(seed=1)          # abandons episode 0 after one step
    recorder.reset(seed=2)          # an episode without steps is not stored
    recorder.step(0)
    recorder.step(0)
    recorder.close()                # stores the open episode
    episodes, _ = load_episodes(DATASET, tmp_path)
    assert [len(e.actions) for e in episodes] == [1, 2]
    assert all(e.truncations[-1] and not e.terminations.any() for e in episodes)


def test_closing_without_steps_writes_nothing(tmp_path):
    recorder = RecordMinari(CoinChaseEnv(), DATASET, tmp_path)
    with pytest.warns(UserWarning, match="no step was recorded"):
        recorder.close()
    assert not (tmp_path / DATASET).exists()
    assert not list((tmp_path / "coinchase").glob(".*"))


class OtherSizeEnv(gym.Env):
    """A fake game with (H, W, 3) frames: frame t is a fixed random image shifted by t."""
    action_space = spaces.Discrete(3)

    def __init__(self, height: int, width: int):
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.image = self.np_random.integers(0, 256, self.observation_space.shape, dtype=np.uint8)
        self.t = 0
        return self.image.copy(), {}

    def step(self, action):
        self.t += 1
        return np.roll(self.image, self.t, axis=1), 0.0, False, self.t >= 6, {}


@pytest.mark.parametrize("height, width", [(96, 80), (210, 160)])   # (210, 160): Atari
def test_other_frame_sizes_are_recorded_at_64x64(tmp_path, height, width):
    recorder = RecordMinari(OtherSizeEnv(height, width), "fake/tall-v0", tmp_path, resize_to=64)
    assert recorder.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
    obs, _ = recorder.reset(seed=0)
    raw = [recorder.unwrapped.image.copy()]
    done = False
    while not done:
        obs, _, terminated, truncated, _ = recorder.step(1)
        raw.append(np.roll(recorder.unwrapped.image, recorder.unwrapped.t, axis=1))
        assert obs.shape == (64, 64, 3)
        done = terminated or truncated
    recorder.close()

    (episode,), n_actions = load_episodes("fake/tall-v0", tmp_path)
    assert n_actions == 3 and episode.frames.shape == (7, 64, 64, 3)
    expected = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in raw])
    np.testing.assert_array_equal(episode.frames, expected)


def test_malformed_dataset_id_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"dataset_id 'coinchase/random' must look like"):
        RecordMinari(CoinChaseEnv(), "coinchase/random", tmp_path)


def test_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    class Interrupting:
        calls = 0

        def reset(self, rng):
            pass

        def __call__(self, obs, info):
            Interrupting.calls += 1
            if Interrupting.calls > 30:
                raise KeyboardInterrupt
            return 0

    monkeypatch.setattr("train.stages.record.make_policy", lambda *args, **kwargs: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        record(RecordConfig(env_id=BUNDLED_ENV_ID, episodes=50, root=str(tmp_path), dataset_id=DATASET, progress=False))
    assert not (tmp_path / DATASET).exists()
    assert not list((tmp_path / "coinchase").glob(".*")), "the staging dir is removed"


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown environment id 'NoSuchGame-v0'.*import envs.*ale-py"):
        make_env("NoSuchGame-v0")
    assert make_env("dreamgym/CoinChase-v0").spec.id == "dreamgym/CoinChase-v0"


def test_continuous_actions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Pendulum-v1: the action space must be Discrete"):
        record(RecordConfig(env_id="Pendulum-v1", root=str(tmp_path), progress=False))


def test_non_image_observations_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"CartPole-v1: observations must be RGB frames"):
        record(RecordConfig(env_id="CartPole-v1", root=str(tmp_path), progress=False))
    assert not (tmp_path / "coinchase").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train.stages.record", "env_id=Pendulum-v1", f"root={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Pendulum-v1: the action space must be Discrete (a world model is driven by keys), "
        "got Box(-2.0, 2.0, (1,), float32)"]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [] and not (REPO / "outputs").exists()


def mean_score(policy, episodes: int = 8) -> float:
    env = CoinChaseEnv(horizon=100)
    scores = []
    for episode in range(episodes):
        obs, info = env.reset(seed=100 + episode)
        policy.reset(np.random.default_rng(episode))
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            done = terminated or truncated
        scores.append(int(info["score"]))
    return float(np.mean(scores))


def test_seeker_collects_more_coins_than_random():
    rng = np.random.default_rng(0)
    seeker = mean_score(CoinSeekerPolicy(epsilon=0.1, rng=rng))
    random = mean_score(RandomPersistentPolicy(5, 1, 8, rng))
    assert seeker > 2 * random + 1, (seeker, random)


def test_seeker_never_walks_into_walls():
    env = CoinChaseEnv(horizon=60)
    policy = make_policy("seeker", 5, np.random.default_rng(0), epsilon=0.3)
    for episode in range(5):
        obs, info = env.reset(seed=episode)
        done = False
        while not done:
            action = policy(obs, info)
            target = tuple(int(v) for v in info["player"] + ACTION_DELTAS[action])
            assert action != 0 and is_free(target), (info["player"], action)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated


def test_policy_factory_rejects_bad_names_and_games():
    assert isinstance(make_policy("random", 4, np.random.default_rng(0)), RandomPersistentPolicy)
    with pytest.raises(ValueError, match="unknown policy 'human'"):
        make_policy("human", 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="seeker policy plays CoinChase"):
        make_policy("seeker", 6, np.random.default_rng(0))


def test_random_policy_holds_each_action_between_min_and_max_repeat():
    policy = RandomPersistentPolicy(5, 3, 5, np.random.default_rng(0))
    actions = [policy(None, {}) for _ in range(400)]
    runs = np.diff(np.flatnonzero(np.diff(actions) != 0))   # lengths of inner runs of one action
    assert runs.min() >= 3   # a run may merge two draws of the same action, so only the lower bound is exact
    assert set(actions) == set(range(5))
