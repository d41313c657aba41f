"""RL in any game's dream: train.rl on a second game (Catch, 3 actions) trains PPO in its dream or in the real
game and judges it in the real Catch; baselines play random for any game; real frames come resized as recorded."""
import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from envs.policies import GAME_BASELINES, baseline_policies  # noqa: E402
from envs.recording import make_env, resize_frame  # noqa: E402
from envs.sb3 import dream_game, make_game, make_vec_env  # noqa: E402
from train.common.cli import compose  # noqa: E402
from train.rl import RLConfig, baseline, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CATCH = "dreamgym/Catch-v0"
TINY = ["n_envs=2", "n_steps=16", "batch_size=32", "n_epochs=1", "eval_every=64", "ckpt_every=64",
        "eval_episodes=4", "eval_horizon=40", "train_horizon=20", "progress=false", "features_dim=32"]


@pytest.fixture(scope="module")
def catch_checkpoint(tmp_path_factory):
    from train.common.untrained import save_untrained

    return save_untrained(tmp_path_factory.mktemp("catch") / "ckpt", env_id=CATCH, bank=4, context=3)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_checkpoint_names_its_game_and_old_ones_play_the_bundled_game(catch_checkpoint, untrained_checkpoint,
                                                                          tmp_path):
    assert dream_game(catch_checkpoint) == (CATCH, 64, 3)
    assert dream_game(None)[0] == "dreamgym/CoinChase-v0"
    old = Path(shutil.copytree(untrained_checkpoint, tmp_path / "old"))
    meta = json.loads((old / "config.json").read_text())
    del meta["env_id"]
    (old / "config.json").write_text(json.dumps(meta))
    assert dream_game(old)[0] == "dreamgym/CoinChase-v0"


def test_real_frames_are_resized_as_the_recorder_resizes_them():
    raw, game = make_env(CATCH), make_game(CATCH, 32, max_episode_steps=5)
    assert game.observation_space.shape == (32, 32, 3)
    (a, _), (b, _) = raw.reset(seed=3), game.reset(seed=3)
    assert np.array_equal(b, resize_frame(a, 32))
    for step in range(5):
        a, *_ = raw.step(step % 3)
        b, _, terminated, truncated, _ = game.step(step % 3)
        assert np.array_equal(b, resize_frame(a, 32))
    assert truncated or terminated   # max_episode_steps=5
    assert make_game(CATCH, 64, max_episode_steps=2000).unwrapped.horizon == 2000   # the game's own limit follows
    env = make_vec_env("real", 2, env_id=CATCH, seed=0)
    assert env.observation_space.shape == (64, 64, 3) and env.action_space.n == 3


def test_ppo_in_the_dream_of_catch_is_judged_in_real_catch(catch_checkpoint, tmp_path):
    run = tmp_path / "dream"
    row = train(compose("rl", RLConfig, TINY + [f"checkpoint={catch_checkpoint}", "env=dream", f"run_dir={run}",
                                                "frames=192"]))
    assert [r["frames"] for r in rows(run)] == [0, 64, 128, 192]
    assert row["env"] == "dream" and row["env_id"] == CATCH and row["episodes"] == 4
    for key in ("real_return_mean", "real_return_std", "real_len_mean", "real_score_mean", "fps", "env_fps"):
        assert key in row
    assert 1 <= row["real_len_mean"] <= 40 and row["real_return_mean"] >= 0
    state = json.loads((run / "state.json").read_text())
    assert state["env_id"] == CATCH and state["frames"] == 192


def test_ppo_in_real_catch_and_its_random_baseline(catch_checkpoint, tmp_path):
    row = train(compose("rl", RLConfig, TINY + ["env=real", f"checkpoint={catch_checkpoint}", "frames=64",
                                                f"run_dir={tmp_path / 'real'}", "features=nature"]))
    assert row["frames"] == 64 and row["env"] == "real" and row["env_id"] == CATCH and row["env_fps"] > 0
    cfg = compose("rl", RLConfig, ["mode=baseline", f"env_id={CATCH}", f"run_dir={tmp_path / 'base'}",
                                   "eval_episodes=4", "eval_horizon=60"])
    (random,) = baseline(cfg)   # Catch has no scripted player of its own (envs.policies.GAME_BASELINES)
    assert random["policy"] == "random" and random["env_id"] == CATCH and random["frames"] == 0
    assert 1 <= random["real_len_mean"] <= 60 and "real_return_mean" in random
    assert baseline(cfg) == [random] and len(rows(tmp_path / "base")) == 2   # seeded: the same episodes


def test_baselines_are_random_and_the_players_envs_policies_declares_for_the_game(monkeypatch, tmp_path):
    assert baseline_policies("dreamgym/CoinChase-v0") == ("random", "seeker")
    assert baseline_policies(CATCH) == ("random",)
    monkeypatch.setitem(GAME_BASELINES, CATCH, ("random",))   # a player declared for Catch: its baseline plays it
    cfg = compose("rl", RLConfig, ["mode=baseline", f"env_id={CATCH}", f"run_dir={tmp_path}", "eval_episodes=2",
                                   "eval_horizon=20"])
    assert [row["policy"] for row in baseline(cfg)] == ["random", "random"]


def test_a_dream_with_another_action_count_is_refused(untrained_checkpoint, tmp_path):
    cfg = compose("rl", RLConfig, TINY + [f"checkpoint={untrained_checkpoint}", "env=dream", f"env_id={CATCH}",
                                          f"run_dir={tmp_path}", "frames=32"])
    with pytest.warns(UserWarning, match="dreams dreamgym/CoinChase-v0"), pytest.raises(ValueError, match="actions"):
        train(cfg)


TOOLS = ["train/rl.py", "train/rl_eval.py", "envs/sb3.py", "play.py",
         *sorted(str(path.relative_to(Path(__file__).parents[1])) for path in
                 (Path(__file__).parents[1] / "viewer").glob("*.py"))]


@pytest.mark.parametrize("module", TOOLS)
def test_no_tool_imports_the_bundled_game(module):
    nodes = list(ast.walk(ast.parse((Path(__file__).parents[1] / module).read_text())))
    names = [node.module for node in nodes if isinstance(node, ast.ImportFrom)]
    names += [alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in names if name and "coinchase" in name]
