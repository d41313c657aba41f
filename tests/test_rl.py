"""RL plumbing: envs.sb3 keeps SB3's VecEnv conventions (same-step resets, terminal_observation, seeding),
and train.rl trains, checkpoints, resumes and evaluates in the real game (a few hundred frames)."""
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage  # noqa: E402

from envs.coinchase import CoinChaseEnv  # noqa: E402
from envs.sb3 import DreamVecEnv, make_vec_env  # noqa: E402
from envs.world_model_env import WorldModelEnv  # noqa: E402
from train.common.cli import compose  # noqa: E402
from train.rl import RLConfig, baseline, train  # noqa: E402

N = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["n_envs=2", "n_steps=16", "batch_size=32", "n_epochs=1", "eval_every=32", "ckpt_every=64",
        "eval_episodes=20", "eval_horizon=40", "train_horizon=20", "progress=false", "features_dim=32"]


def actions(steps, n=N, seed=0):
    return np.random.default_rng(seed).integers(5, size=(steps, n))


def play(env, acts):
    """obs of reset then each step (S+1, N, H, W, 3), and the step results."""
    frames, results = [env.reset()], []
    for a in acts:
        results.append(env.step(a))
        frames.append(results[-1][0])
    return np.stack(frames), results


def test_single_envs_pass_sb3_check_env(untrained_checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # SB3 reports problems as warnings
        check_env(WorldModelEnv(untrained_checkpoint))
        check_env(CoinChaseEnv())


@pytest.mark.parametrize("kind", ["real", "dream"])
def test_shapes_dtypes_infos_and_seeding(kind, untrained_checkpoint):
    env = make_vec_env(kind, N, untrained_checkpoint, seed=5, max_episode_steps=4)
    assert env.observation_space.shape == (64, 64, 3) and env.action_space.n == 5
    frames, results = play(env, actions(5))
    assert frames.shape == (6, N, 64, 64, 3) and frames.dtype == np.uint8
    for _, rewards, dones, infos in results:
        assert rewards.dtype == np.float32 and rewards.shape == (N,)
        assert dones.dtype == bool and dones.shape == (N,)
        assert len(infos) == N and all("TimeLimit.truncated" in info for info in infos)
        for done, info in zip(dones, infos, strict=True):
            assert ("terminal_observation" in info) == done
            if done:
                assert info["terminal_observation"].shape == (64, 64, 3)
    assert results[3][2].all() or kind == "real"   # the dream never terminates untrained: truncation at step 4
    env.seed(5)
    assert np.array_equal(play(env, actions(5))[0], frames)
    env.seed(6)
    assert not np.array_equal(play(env, actions(5))[0], frames)
    env.close()


def test_dream_vec_env_is_dummy_vec_env_of_single_dreams(untrained_checkpoint):
    """One batched forward, same-step resets: the same episodes as SB3's DummyVecEnv over N WorldModelEnvs."""
    ours = make_vec_env("dream", N, untrained_checkpoint, seed=3, max_episode_steps=3)
    ref = DummyVecEnv([lambda: WorldModelEnv(untrained_checkpoint, max_episode_steps=3) for _ in range(N)])
    ref.seed(3)
    (ours_frames, ours_steps), (ref_frames, ref_steps) = play(ours, actions(7)), play(ref, actions(7))
    assert ours.reset_infos == ref.reset_infos
    np.testing.assert_allclose(ours_frames, ref_frames, atol=2)
    for (_, r1, d1, i1), (_, r2, d2, i2) in zip(ours_steps, ref_steps, strict=True):
        np.testing.assert_allclose(r1, r2, atol=1e-4)
        assert np.array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
            if "terminal_observation" in b:
                np.testing.assert_allclose(a["terminal_observation"], b["terminal_observation"], atol=2)
    assert sum(d.sum() for _, _, d, _ in ours_steps) == 2 * N


def test_a_terminated_row_restarts_in_the_same_step_and_alone(untrained_checkpoint):
    env, plain = (make_vec_env("dream", N, untrained_checkpoint, seed=1) for _ in range(2))
    core, step = env.venv.core, env.venv.core.step
    calls = []

    def step_ending_row_1_on_the_second_call(acts):
        out = step(acts)
        calls.append(1)
        if len(calls) == 2:
            out.terminations[1] = 1.0
        return out

    core.step = step_ending_row_1_on_the_second_call
    frames, results = play(env, actions(3))
    plain_frames, _ = play(plain, actions(3))
    dones, infos = results[1][2], results[1][3]
    assert dones.tolist() == [False, True, False] and not infos[1]["TimeLimit.truncated"]
    np.testing.assert_allclose(infos[1]["terminal_observation"], plain_frames[2, 1], atol=2)
    start = env.reset_infos[1]["start_index"]
    assert np.array_equal(frames[2, 1], env.venv.start_context(start)[0][-1])   # the new episode's first frame
    np.testing.assert_allclose(frames[:, [0, 2]], plain_frames[:, [0, 2]], atol=2)  # the other rows go on
    assert results[2][3][1]["frame_index"] == 1 and not results[2][2][1]   # stepped, not re-reset, next step


def test_ppo_sees_channel_first_images_through_vec_transpose(untrained_checkpoint):
    env = make_vec_env("dream", 2, untrained_checkpoint, seed=0)
    model = PPO("CnnPolicy", env, n_steps=8, batch_size=8,
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})
    assert isinstance(model.env, VecTransposeImage) and isinstance(model.env.unwrapped, DreamVecEnv)
    assert model.observation_space.shape == (3, 64, 64)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_checkpoints_resumes_and_evaluates_in_the_real_game(untrained_checkpoint, tmp_path):
    run = tmp_path / "dream"
    common = TINY + [f"checkpoint={untrained_checkpoint}", "env=dream", f"run_dir={run}"]
    row = train(compose("rl", RLConfig, common + ["frames=64"]))
    state = json.loads((run / "state.json").read_text())
    assert state["frames"] == 64 and (run / state["model"]).exists() and not list(run.glob("*.tmp"))
    assert [r["frames"] for r in rows(run)] == [0, 32, 64]
    for key in ("real_score_mean", "real_score_std", "real_len_mean", "fps", "env_fps"):
        assert key in row
    assert row["episodes"] == 20 and 1 <= row["real_len_mean"] <= 40 and row["fps"] > 0

    row = train(compose("rl", RLConfig, common + ["frames=128"]))   # resumes at 64
    state = json.loads((run / "state.json").read_text())
    assert state["frames"] == 128 and [p.name for p in run.glob("model_*.zip")] == ["model_128.zip"]
    assert [r["frames"] for r in rows(run)] == [0, 32, 64, 96, 128]
    assert PPO.load(run / state["model"]).num_timesteps == 128

    with pytest.raises(ValueError, match="env=dream"):
        train(compose("rl", RLConfig, TINY + ["env=real", f"run_dir={run}", "frames=512"]))


def test_real_game_training_and_baselines(tmp_path):
    row = train(compose("rl", RLConfig, TINY + ["env=real", f"run_dir={tmp_path / 'real'}", "frames=32",
                                                "features=nature"]))
    assert row["frames"] == 32 and row["env"] == "real" and row["env_fps"] > row["fps"] > 0
    cfg = compose("rl", RLConfig, ["mode=baseline", f"run_dir={tmp_path / 'base'}", "eval_horizon=100"])
    random, seeker = baseline(cfg)
    assert (random["policy"], seeker["policy"]) == ("random", "seeker")
    assert seeker["real_score_mean"] > random["real_score_mean"] + 1
    assert baseline(cfg) == [random, seeker]   # seeded: the same episodes and policies
    assert len(rows(tmp_path / "base")) == 4


def test_bad_config_is_refused(tmp_path):
    for override in ("env=mars", "features=vit", "n_envs=0"):
        with pytest.raises(ValueError):
            train(compose("rl", RLConfig, [override, f"run_dir={tmp_path}"]))
