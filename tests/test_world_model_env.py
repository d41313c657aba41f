"""The dreamed Gymnasium envs: API conformance, seeding, vector = N singles, autoreset, bad input, infos."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the dreamgym/ ids)
import worldmodel
from envs.world_model_env import WorldModelEnv, WorldModelVectorEnv

STEP_INFO = {"denoise_steps", "frame_index", "termination_prob", "raw_reward"}   # + step_ms with timing_info


@pytest.fixture
def ckpt(untrained_checkpoint):
    return untrained_checkpoint


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        frames.append(env.step(a)[0])
    return np.stack(frames)


def test_passes_gymnasium_check_env(ckpt):
    env = WorldModelEnv(ckpt, render_mode="rgb_array")
    check_env(env)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(5)


def test_the_bundled_dream_passes_check_env_with_default_arguments():
    """Exactly the documented call: default arguments carry no wall-clock time in infos (timing is opt-in)."""
    check_env(gym.make("dreamgym/CoinChase-Dream-v0").unwrapped)


def test_step_time_is_in_infos_only_when_asked_for(ckpt):
    for timing_info, keys in ((False, STEP_INFO), (True, STEP_INFO | {"step_ms"})):
        env = WorldModelEnv(ckpt, timing_info=timing_info)
        env.reset(seed=0)
        info = env.step(0)[4]
        assert set(info) == keys
        assert isinstance(info["frame_index"], int) and isinstance(info["raw_reward"], float)
        vec = WorldModelVectorEnv(2, ckpt, timing_info=timing_info)
        vec.reset(seed=0)
        assert set(vec.step(np.array([0, 0]))[4]) == keys


def test_public_facts_for_callers_such_as_the_viewer(ckpt):
    env, saved = WorldModelEnv(ckpt), worldmodel.load(ckpt)
    bank, length = saved.start_frames.shape[:2]
    assert env.max_denoise_steps == saved.config.sampler.max_steps
    assert env.bank_size == bank and env.context_length == length
    frames, actions = env.start_context(bank - 1)
    assert np.array_equal(frames, saved.start_frames[bank - 1].numpy()) and actions.shape == (length,)
    with pytest.raises(IndexError, match="bank"):
        env.start_context(bank)


def test_generic_id_opens_a_checkpoint_and_takes_device_and_dtype(ckpt):
    env = gym.make("dreamgym/WorldModel-v0", checkpoint=str(ckpt), device="cpu", dtype="bfloat16")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(4)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3)
    assert isinstance(reward, float) and isinstance(terminated, bool)
    assert set(info) == STEP_INFO
    assert env.unwrapped.core.dit.out.weight.dtype == torch.bfloat16


def test_same_seed_and_actions_reproduce_the_rollout_and_seeds_differ(ckpt):
    env = WorldModelEnv(ckpt)
    actions = [1, 4, 4, 2, 0, 3]
    assert np.array_equal(rollout(env, 3, actions), rollout(env, 3, actions))
    assert not np.array_equal(rollout(env, 3, actions)[1:], rollout(env, 4, actions)[1:])


def test_reset_primes_from_the_bank_or_from_given_frames(ckpt):
    env = WorldModelEnv(ckpt)
    frames, actions = env.start_context(2)
    obs, info = env.reset(seed=0, options={"start_index": 2})
    assert info["start_index"] == 2 and np.array_equal(obs, frames[-1])
    given = np.roll(frames, 1, axis=0)
    obs, info = env.reset(options={"frames": given, "actions": actions})
    assert info["start_index"] == -1 and np.array_equal(obs, given[-1])


def test_denoise_steps_are_chosen_at_run_time_and_reported(ckpt):
    env = WorldModelEnv(ckpt, denoise_steps=1)
    env.reset(seed=0)
    assert env.step(0)[4]["denoise_steps"] == 1
    env.unwrapped.denoise_steps = 4
    assert env.step(0)[4]["denoise_steps"] == 4
    with pytest.raises(ValueError):
        env.unwrapped.denoise_steps = 9


def test_truncates_at_the_configured_horizon_then_needs_reset(ckpt):
    env = WorldModelEnv(ckpt, max_episode_steps=3, termination_threshold=1.1)
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


@pytest.mark.parametrize("action", [5, -1, 1.5, "up", np.array([1, 2]), None])
def test_bad_actions_are_refused_naming_the_space(ckpt, action):
    env = WorldModelEnv(ckpt)
    env.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction, match="Discrete"):
        env.step(action)


def test_step_before_reset_is_a_clear_error(ckpt):
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        WorldModelEnv(ckpt).step(0)


def test_bad_reset_options_are_refused(ckpt):
    env = WorldModelEnv(ckpt)
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"frame": 1})
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"frames": np.zeros((2, 64, 64, 3), np.float32)})
    with pytest.raises(ValueError, match="start_index"):
        env.reset(options={"start_index": 99})


def test_missing_or_non_checkpoint_paths_are_refused(tmp_path):
    with pytest.raises(worldmodel.CheckpointError, match="does not exist"):
        WorldModelEnv(tmp_path / "nowhere")
    with pytest.raises(worldmodel.CheckpointError, match="config.json"):
        WorldModelEnv(tmp_path)


def test_vector_env_matches_n_single_envs(ckpt):
    n, actions = 3, np.array([[1, 2, 3], [4, 4, 0], [2, 1, 1], [0, 3, 4]])
    vec = WorldModelVectorEnv(n, ckpt)
    assert vec.single_observation_space.shape == (64, 64, 3) and vec.observation_space.shape == (n, 64, 64, 3)
    assert vec.action_space == gym.spaces.MultiDiscrete([5] * n)
    obs, _ = vec.reset(seed=10)
    batched = [obs] + [vec.step(a)[0] for a in actions]
    batched = np.stack(batched, axis=1)                                   # (N, T+1, H, W, 3)
    for i in range(n):
        single = rollout(WorldModelEnv(ckpt), 10 + i, actions[:, i].tolist())
        assert np.abs(single.astype(int) - batched[i]).max() <= 2


def test_vector_env_autoresets_a_finished_env_on_the_next_step_only(ckpt):
    vec = WorldModelVectorEnv(2, ckpt, max_episode_steps=2, termination_threshold=1.1)
    vec.reset(seed=0)
    vec.step(np.array([0, 0]))
    _, _, _, truncated, _ = vec.step(np.array([0, 0]))
    assert truncated.tolist() == [True, True]
    obs, rewards, terminated, truncated, info = vec.step(np.array([1, 1]))   # the reset step
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any() and not truncated.any()
    assert info["frame_index"].tolist() == [0, 0] and info["raw_reward"].tolist() == [0.0, 0.0]
    bank = [vec.start_context(i)[0][-1] for i in range(vec.bank_size)]
    assert all(any(np.array_equal(o, b) for b in bank) for o in obs)
    _, _, _, truncated, info = vec.step(np.array([1, 1]))
    assert not truncated.any() and info["frame_index"].tolist() == [1, 1]


def test_vector_infos_are_the_single_infos_batched(ckpt):
    single = WorldModelEnv(ckpt)
    _, reset_info = single.reset(seed=5)
    single_info = single.step(3)[4]
    vec = WorldModelVectorEnv(2, ckpt)
    _, vec_reset_info = vec.reset(seed=5)
    vec_info = vec.step(np.array([3, 3]))[4]
    assert set(vec_reset_info) == set(reset_info) and vec_reset_info["start_index"][0] == reset_info["start_index"]
    assert set(vec_info) == set(single_info)
    for key, value in single_info.items():
        assert vec_info[key].shape == (2,)
        assert np.isclose(vec_info[key][0], value, atol=1e-4), key


def test_vector_env_refuses_bad_actions(ckpt):
    vec = WorldModelVectorEnv(2, ckpt)
    vec.reset(seed=0)
    for bad in (np.array([0, 7]), np.array([0]), np.array([[0, 1]])):
        with pytest.raises(gym.error.InvalidAction, match="MultiDiscrete"):
            vec.step(bad)


def test_per_env_reset_leaves_the_other_envs_untouched(ckpt):
    vec = WorldModelVectorEnv(2, ckpt, max_episode_steps=3, termination_threshold=1.1)
    vec.reset(seed=0)
    vec.step(np.array([1, 1]))
    # env 0 alone will be reset after truncation; row 1 must continue as an untouched single env would
    vec._steps[0] = 2
    vec.step(np.array([1, 1]))
    obs, *_ = vec.step(np.array([2, 2]))
    single = rollout(WorldModelEnv(ckpt), 1, [1, 1, 2])
    assert np.abs(single[-1].astype(int) - obs[1]).max() <= 2


def test_reset_rows_reprimes_only_those_rows_now(ckpt):
    vec = WorldModelVectorEnv(3, ckpt, render_mode="rgb_array")
    vec.reset(seed=0)
    before, *_ = vec.step(np.array([1, 2, 3]))
    frames, info = vec.reset_rows([2], seeds=[7])
    single_obs, single_info = WorldModelEnv(ckpt).reset(seed=7)   # a reseeded row resets as a single env would
    assert frames.shape == (1, 64, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], single_obs) and info["start_index"].tolist() == [single_info["start_index"]]
    now = vec.render()
    assert np.array_equal(now[:2], before[:2]) and np.array_equal(now[2], frames[0])
    _, _, _, _, step_info = vec.step(np.array([1, 2, 3]))
    assert step_info["frame_index"].tolist() == [2, 2, 1]          # rows 0, 1 went on; row 2 started over
    for bad in ([3], [0, 0], [-1]):
        with pytest.raises(ValueError, match="distinct env indices"):
            vec.reset_rows(bad)
