"""`python -m train.eval.game` on any game: PSNR against the real game and copy-last-frame for every checkpoint,
the rules check where the game has an evaluation spec, and a real-above / dream-below picture."""
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from train.common.cli import compose
from train.common.untrained import save_untrained
from train.eval.game import GameEvalConfig, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Blink(gym.Env):
    """A game without an evaluation spec: the frame is lit where the last key points (2 actions)."""
    metadata = {"render_modes": []}
    observation_space = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((32, 32, 3), np.uint8), {}

    def step(self, action):
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[:, 16 * int(action):16 * int(action) + 16] = 200
        return frame, 0.0, False, False, {}


def evaluate(tmp_path, checkpoint, *extra):
    return main(compose("eval_game", GameEvalConfig, [f"checkpoints=[{checkpoint}]", "starts=2", "horizon=33",
                                                      f"out={tmp_path / 'eval'}", "picture_steps=4", *extra]))


def test_a_suite_game_gets_frame_metrics_the_rules_check_and_a_picture(tmp_path):
    checkpoint = save_untrained(tmp_path / "catch", env_id="dreamgym/Catch-v0")
    results = evaluate(tmp_path, checkpoint)
    metrics = results["models"]["catch"]
    assert results["env_id"] == "dreamgym/Catch-v0" and set(metrics["psnr"]) == {1, 32}
    assert metrics["copy_mean"] > metrics["psnr_mean"]        # an untrained dream loses to holding the start frame
    assert [row["horizon"] for row in metrics["rules"]["horizons"]] == [1, 32]
    assert "respawn" in metrics["rules"]["random"]
    # the autoencoder alone on the real frames: the ceiling of any dream drawn through it
    assert [row["horizon"] for row in metrics["autoencoder_rules"]["horizons"]] == [1, 32]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Rules check: dreamgym/Catch-v0" in report and "catch.png" in report and "its autoencoder alone" in report
    assert (tmp_path / "eval" / "catch.png").stat().st_size > 0
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["env_id"] == "dreamgym/Catch-v0"


def test_a_game_without_a_spec_gets_the_frame_metrics_on_resized_real_frames(tmp_path):
    gym.register("test/Blink-v0", entry_point=Blink)
    try:
        checkpoint = save_untrained(tmp_path / "blink", env_id="test/Blink-v0")
        metrics = evaluate(tmp_path, checkpoint)["models"]["blink"]
    finally:
        gym.registry.pop("test/Blink-v0")
    assert "rules" not in metrics and 0 < metrics["psnr_mean"] < 100 and 0 < metrics["copy_mean"] < 100


def test_checkpoints_that_name_no_game_need_an_env_id(tmp_path):
    from worldmodel import checkpoint as ck

    path = save_untrained(tmp_path / "plain")
    config = json.loads((path / ck.CONFIG_FILE).read_text())
    config["env_id"] = ""
    (path / ck.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="env_id"):
        evaluate(tmp_path, path)


def test_an_autoencoder_only_checkpoint_gets_the_autoencoder_check_alone(tmp_path):
    from worldmodel import checkpoint as ck

    model = ck.load(save_untrained(tmp_path / "full", env_id="dreamgym/Catch-v0"))
    model.config.stage = "autoencoder"
    ck.save(tmp_path / "ae", model.config, model.autoencoder)
    metrics = evaluate(tmp_path, tmp_path / "ae")["models"]["ae"]
    assert set(metrics) == {"autoencoder_rules"}
    assert [row["horizon"] for row in metrics["autoencoder_rules"]["horizons"]] == [1, 32]
    assert not (tmp_path / "eval" / "ae.png").exists()


def test_checkpoints_that_share_an_autoencoder_get_it_checked_once(tmp_path):
    checkpoint = save_untrained(tmp_path / "catch", env_id="dreamgym/Catch-v0")
    models = evaluate(tmp_path, checkpoint, f"checkpoints=[{checkpoint},{checkpoint}]", "names=[a,b]")["models"]
    assert models["b"]["autoencoder_rules"] == models["a"]["autoencoder_rules"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert report.count("its autoencoder alone") == 1 and "### b: its autoencoder is a's" in report
