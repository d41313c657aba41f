"""Rollout-eval metrics on known inputs, and the command end to end on an untrained checkpoint."""
import cv2
import numpy as np

from envs.coinchase import PALETTE, CoinChaseEnv
from train.rollout_eval import MISSING_PLAYER, RolloutEvalConfig, main, player_cells, position_error
from worldmodel.metrics import palette_artifact_rate, psnr
from worldmodel.untrained import save_untrained


def frames_after(actions, seed=1):
    env = CoinChaseEnv(enemy_move_prob=0.0)
    obs, info = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        out.append(env.step(a)[0])
    return np.stack(out), env


def test_identical_frames_have_infinite_psnr_and_no_position_error():
    frames, _ = frames_after([4, 2])
    assert np.isinf(psnr(frames, frames)).all()
    assert position_error(frames, frames).tolist() == [0.0, 0.0, 0.0]


def test_the_detector_reads_the_real_player_cell_and_a_one_cell_shift_costs_one():
    env = CoinChaseEnv(enemy_move_prob=0.0)
    obs, info = env.reset(seed=3)
    assert tuple(player_cells(obs[None])[0]) == tuple(info["player"])
    moved = next(o for a in (1, 2, 3, 4) if (o := env.step(a)[0]) is not None and
                 tuple(player_cells(o[None])[0]) != tuple(info["player"]))
    assert position_error(moved[None], obs[None])[0] == 1.0


def test_a_frame_without_player_is_charged_the_missing_penalty():
    obs, _ = frames_after([])
    blank = np.broadcast_to(PALETTE[0], obs.shape).astype(np.uint8)       # (1, H, W, 3) floor only
    assert position_error(blank, obs)[0] == MISSING_PLAYER


def test_blurring_raises_the_palette_artifact_rate():
    obs, _ = frames_after([])
    blurred = cv2.GaussianBlur(obs[0], (5, 5), 1.5)
    assert palette_artifact_rate(obs[0][None], PALETTE)[0] == 0.0
    assert palette_artifact_rate(blurred[None], PALETTE)[0] > 0.05


def test_the_command_scores_copy_last_and_a_model_at_every_horizon(tmp_path):
    ckpt = save_untrained(tmp_path / "ckpt", bank=2, context=2)
    out = tmp_path / "table.md"
    results = main(RolloutEvalConfig(checkpoints=[str(ckpt)], horizons=[1, 4], starts=3, out=str(out)))
    assert len(results) == 2 and "copy-last-frame" in results and any(k.startswith("untrained") for k in results)
    for table in results.values():
        assert set(table) == {1, 4} and table[1]["n"] == 3
        assert 0.0 <= table[1]["artifact"] <= 1.0 and table[1]["pos_err"] >= 0.0
    assert "pos err@4" in out.read_text()


def test_a_state_probe_can_read_the_player_instead_of_the_colour_detector(tmp_path, monkeypatch):
    import train.probe
    from train.probe import Probe, save_probe

    reads = []
    original = Probe.read
    monkeypatch.setattr(Probe, "read", lambda self, frames: reads.append(len(frames)) or original(self, frames))
    probe_dir = save_probe(Probe(8), tmp_path / "probe", {})
    ckpt = save_untrained(tmp_path / "ckpt", bank=2, context=2)
    results = main(RolloutEvalConfig(checkpoints=[str(ckpt)], horizons=[1], starts=2, probe=str(probe_dir)))
    assert reads == [2, 2, 2, 2]            # generated and real frames, for copy-last and the model
    assert all(0.0 <= table[1]["pos_err"] <= 14.0 for table in results.values())
    assert train.probe.load_probe(probe_dir).width == 8
