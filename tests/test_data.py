"""Episodes -> clips: the per-frame alignment the model relies on, windows inside episodes, splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.coinchase import CoinChaseEnv
from envs.policies import RandomPersistentPolicy
from envs.recording import RecordMinari
from worldmodel.data import ClipDataset, Episode, load_episodes, null_action, sample_batch, split_by_episode

N_ACTIONS = 5


def numbered_episode(episode: int, steps: int) -> Episode:
    """Frame k of episode e is filled with (e, k, 0); action i is i % N_ACTIONS; reward i is i + 0.5."""
    frames = np.zeros((steps + 1, 4, 4, 3), dtype=np.uint8)
    frames[..., 0] = episode
    frames[..., 1] = np.arange(steps + 1)[:, None, None]
    terminations = np.zeros(steps, dtype=bool)
    terminations[-1] = True
    return Episode(frames=frames, actions=np.arange(steps, dtype=np.int64) % N_ACTIONS,
                   rewards=np.arange(steps, dtype=np.float32) + 0.5, terminations=terminations,
                   truncations=np.zeros(steps, dtype=bool), infos={})


def test_frame_k_is_paired_with_the_action_that_produced_it():
    episode = numbered_episode(0, steps=6)
    item = ClipDataset([episode], clip_len=7, n_actions=N_ACTIONS)[0]
    assert item["start"] == 0
    assert item["actions"].tolist() == [null_action(N_ACTIONS)] + episode.actions.tolist()
    assert null_action(N_ACTIONS) == N_ACTIONS
    assert item["rewards"].tolist() == [0.0] + episode.rewards.tolist()
    assert item["terminations"].tolist() == [False] * 6 + [True]

    later = ClipDataset([episode], clip_len=3, n_actions=N_ACTIONS)[2]   # frames 2, 3, 4
    assert later["start"] == 2
    assert later["frames"][:, 0, 0, 1].tolist() == [2, 3, 4]
    assert later["actions"].tolist() == episode.actions[1:4].tolist()
    assert later["rewards"].tolist() == episode.rewards[1:4].tolist()


def test_windows_never_cross_episodes_and_short_episodes_are_skipped():
    episodes = [numbered_episode(0, 9), numbered_episode(1, 2), numbered_episode(2, 5)]   # 10, 3, 6 frames
    dataset = ClipDataset(episodes, clip_len=4, n_actions=N_ACTIONS)
    assert len(dataset) == (10 - 4 + 1) + 0 + (6 - 4 + 1)
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        frames = item["frames"].numpy()
        assert (frames[..., 0] == item["episode"]).all(), "one episode per window"
        assert frames[:, 0, 0, 1].tolist() == list(range(item["start"], item["start"] + 4))
        seen.add((item["episode"], item["start"]))
    assert len(seen) == len(dataset) and 1 not in {e for e, _ in seen}


def test_no_window_at_all_is_an_error():
    with pytest.raises(ValueError, match="no window of 8 frames"):
        ClipDataset([numbered_episode(0, 3)], clip_len=8, n_actions=N_ACTIONS)


def test_frames_keep_their_dtype_uint8_pixels_and_float_latents():
    pixels = ClipDataset([numbered_episode(0, 4)], clip_len=2, n_actions=N_ACTIONS)
    assert pixels[0]["frames"].dtype == torch.uint8 and pixels[0]["frames"].shape == (2, 4, 4, 3)
    latents = np.random.default_rng(0).standard_normal((6, 8, 2, 2)).astype(np.float32)   # (n+1, C, h, w)
    episode = numbered_episode(0, 5)
    episode = Episode(latents, episode.actions, episode.rewards, episode.terminations, episode.truncations)
    item = ClipDataset([episode], clip_len=3, n_actions=N_ACTIONS)[1]
    assert item["frames"].dtype == torch.float32
    np.testing.assert_array_equal(item["frames"].numpy(), latents[1:4])
    assert item["actions"].dtype == torch.int64 and item["rewards"].dtype == torch.float32
    assert item["terminations"].dtype == torch.bool


def test_items_are_copies_not_views_of_the_dataset():
    episode = numbered_episode(0, 4)
    dataset = ClipDataset([episode], clip_len=2, n_actions=N_ACTIONS)
    item = dataset[0]
    item["frames"].fill_(99)
    item["actions"].fill_(0)
    assert episode.frames.max() < 99 and dataset[0]["actions"][0] == N_ACTIONS


def test_sample_batch_is_seeded_and_stacked():
    dataset = ClipDataset([numbered_episode(e, 7) for e in range(3)], clip_len=4, n_actions=N_ACTIONS)
    first = sample_batch(dataset, 6, torch.Generator().manual_seed(3))
    again = sample_batch(dataset, 6, torch.Generator().manual_seed(3))
    assert first["frames"].shape == (6, 4, 4, 4, 3) and first["frames"].dtype == torch.uint8
    assert first["actions"].shape == first["rewards"].shape == first["terminations"].shape == (6, 4)
    assert first["episode"].shape == first["start"].shape == (6,)
    for key in first:
        assert torch.equal(first[key], again[key])
    for b in range(6):
        assert first["frames"][b, :, 0, 0, 1].tolist() == list(range(int(first["start"][b]),
                                                                     int(first["start"][b]) + 4))


def test_split_is_seeded_disjoint_and_keeps_a_val_episode():
    episodes = [numbered_episode(e, 3) for e in range(10)]
    train, val = split_by_episode(episodes, 0.2, seed=1)
    train_again, val_again = split_by_episode(episodes, 0.2, seed=1)
    assert [id(e) for e in val] == [id(e) for e in val_again] and len(val) == 2
    assert {id(e) for e in train}.isdisjoint(id(e) for e in val)
    assert len(train) + len(val) == 10
    assert [id(e) for e in split_by_episode(episodes, 0.2, seed=2)[1]] != [id(e) for e in val]
    assert len(split_by_episode(episodes[:2], 0.01, seed=0)[1]) == 1, "at least one val episode"
    assert len(split_by_episode(episodes[:2], 0.9, seed=0)[0]) == 1, "at least one train episode"
    assert split_by_episode(episodes, 0.0, seed=0) == (episodes, [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_episode(episodes, 1.0, seed=0)


def test_loaded_clips_equal_what_the_env_produced(tmp_path):
    recorder = RecordMinari(CoinChaseEnv(horizon=12), "coinchase/clips-v0", tmp_path)
    policy = RandomPersistentPolicy(N_ACTIONS, 1, 3, np.random.default_rng(0))
    produced = []   # per episode: (frames, actions, rewards, terminations) as the env returned them
    for episode in range(4):
        obs, info = recorder.reset(seed=episode)
        frames, actions, rewards, terminations = [obs], [], [], []
        done = False
        while not done:
            action = policy(obs, info)
            obs, reward, terminated, truncated, info = recorder.step(action)
            frames.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            done = terminated or truncated
        produced.append((np.stack(frames), actions, rewards, terminations))
    recorder.close()

    episodes, n_actions = load_episodes("coinchase/clips-v0", tmp_path)
    dataset = ClipDataset(episodes, clip_len=3, n_actions=n_actions)
    assert len(dataset) == sum(len(f) - 2 for f, *_ in produced if len(f) >= 3)
    for index in range(len(dataset)):
        item = dataset[index]
        frames, actions, rewards, terminations = produced[item["episode"]]
        k = item["start"]
        np.testing.assert_array_equal(item["frames"].numpy(), frames[k:k + 3])
        for t in range(3):   # frame k+t was produced by step k+t-1
            step = k + t - 1
            assert item["actions"][t] == (actions[step] if step >= 0 else n_actions)
            assert item["rewards"][t] == (rewards[step] if step >= 0 else 0.0)
            assert bool(item["terminations"][t]) == (terminations[step] if step >= 0 else False)


def test_missing_dataset_names_the_id_and_how_to_record_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dataset 'coinchase/none-v0'.*python -m train.stages.record"):
        load_episodes("coinchase/none-v0", tmp_path)


def test_episode_checks_its_lengths():
    episode = numbered_episode(0, 3)
    with pytest.raises(ValueError, match="needs 4 frames"):
        Episode(episode.frames[:3], episode.actions, episode.rewards, episode.terminations, episode.truncations)
