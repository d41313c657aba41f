"""train.eval: metric functions on known inputs, the real rollouts it compares against, and the command end to end."""
import json

import cv2
import numpy as np
import pytest

import train.eval
from envs.coinchase import PALETTE, CoinChaseEnv
from train.eval import COPY_LAST, REAL, EvalConfig, main, summarise, validate
from train.eval_rollouts import (MISSING_PLAYER, FrameScores, ScriptedActions, colour_reader, copy_last_frames,
                                 player_cells, position_error, real_frames, real_rollouts, score_rollout,
                                 score_violations)
from worldmodel.metrics import palette_artifact_rate, psnr, ssim
from worldmodel.untrained import save_untrained


def frames_after(actions, seed=1):
    env = CoinChaseEnv(enemy_move_prob=0.0)
    obs, info = env.reset(seed=seed)
    out, cells = [obs], [info["player"]]
    for a in actions:
        obs, _, _, _, info = env.step(a)
        out.append(obs), cells.append(info["player"])
    return np.stack(out), np.stack(cells)


def test_identical_frames_have_infinite_psnr_unit_ssim_and_no_position_error():
    frames, cells = frames_after([4, 2])
    assert np.isinf(psnr(frames, frames)).all()
    assert np.allclose(ssim(frames, frames), 1.0)
    assert position_error(player_cells(frames), cells).tolist() == [0.0, 0.0, 0.0]


def test_a_sprite_shifted_by_one_cell_costs_one_cell_of_position_error():
    env = CoinChaseEnv(enemy_move_prob=0.0)
    obs, info = env.reset(seed=3)
    for action in (1, 2, 3, 4):
        moved, _, _, _, moved_info = env.step(action)
        if tuple(moved_info["player"]) != tuple(info["player"]):
            break
        obs, info = moved, moved_info
    assert position_error(player_cells(moved[None]), info["player"][None])[0] == 1.0
    assert position_error(player_cells(obs[None]), info["player"][None])[0] == 0.0


def test_a_frame_without_player_is_charged_the_missing_penalty():
    frames, cells = frames_after([])
    blank = np.broadcast_to(PALETTE[0], frames.shape).astype(np.uint8)        # floor only
    assert position_error(player_cells(blank), cells)[0] == MISSING_PLAYER


def test_blurring_raises_the_palette_artifact_rate_and_lowers_ssim():
    frames, _ = frames_after([])
    blurred = cv2.GaussianBlur(frames[0], (5, 5), 1.5)[None]
    assert palette_artifact_rate(frames, PALETTE)[0] == 0.0
    assert palette_artifact_rate(blurred, PALETTE)[0] > 0.05
    assert ssim(blurred, frames)[0] < 0.95


def test_the_score_may_stay_or_rise_by_one_with_a_reward_and_nothing_else():
    previous = np.array([5, 5, 5, 5, 5, 999])
    now = np.array([5, 6, 6, 4, 7, 0])                       # stay, +1 rewarded, +1 unrewarded, fall, jump, wrap
    reward_now = np.array([False, True, False, False, True, True])
    got = score_violations(now, previous, reward_now, np.zeros(6, bool))
    assert got.tolist() == [False, False, True, True, True, False]
    late = score_violations(np.array([6]), np.array([5]), np.array([False]), np.array([True]))
    assert not late[0]                                       # drawn one frame after the reward: fine


@pytest.mark.parametrize("scenario,expected", [("hold", [4, 4, 4, 4]), ("alternate", [1, 2, 1, 2]), ("noop", [0] * 4)])
def test_adversarial_scripts_give_the_promised_actions(scenario, expected):
    script = ScriptedActions(scenario, row=3)
    script.reset(np.random.default_rng(0))
    assert [script(None, {}) for _ in range(4)] == expected


def test_real_rollouts_are_reproducible_and_carry_ground_truth():
    a = real_rollouts("policy", [0, 1], starts=2, context_frames=3, n_actions=5, horizon=12)
    b = real_rollouts("policy", [0, 1], starts=2, context_frames=3, n_actions=5, horizon=12)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert a.seeds.tolist() == [0, 0, 1, 1] and a.context.shape[:2] == (4, 3) and a.frames.shape[:2] == (4, 12)
    assert np.array_equal(player_cells(a.frames.reshape(-1, 64, 64, 3)), a.players.reshape(-1, 2))
    held = real_rollouts("hold", [0], starts=1, context_frames=3, n_actions=5, horizon=5)
    assert (held.actions == 1).all()                         # row 0 holds "up"


def test_without_a_lethal_enemy_every_rollout_lives_to_the_horizon_and_catches_become_events():
    lethal = real_rollouts("noop", [0], starts=4, context_frames=2, n_actions=5, horizon=300, chase_prob=1.0)
    assert not lethal.alive[:, -1].all()                    # a chasing enemy catches players who never move
    immortal = real_rollouts("noop", [0], starts=4, context_frames=2, n_actions=5, horizon=300, chase_prob=1.0,
                             lethal=False)
    assert immortal.alive.all() and immortal.terminated.any()
    assert np.array_equal(immortal.players[:, 0], immortal.players[:, -1])     # noop: the player never moved


def test_the_real_game_scores_perfectly_and_copy_last_does_not():
    real = real_rollouts("policy", [0, 1], starts=3, context_frames=2, n_actions=5, horizon=16)
    perfect = summarise(score_rollout(real_frames(real), real, colour_reader)[0], real, [1, 16])
    assert perfect[16]["psnr"]["mean"] == 60.0 and perfect[16]["pos_err"]["mean"] == 0.0
    assert perfect[16]["artifact"]["mean"] == 0.0 and perfect[16]["score_violation"]["mean"] == 0.0
    frozen = summarise(score_rollout(copy_last_frames(real), real, colour_reader)[0], real, [1, 16])
    assert frozen[16]["psnr"]["mean"] < 60.0 and frozen[16]["pos_err"]["mean"] > 0.0
    assert frozen[16]["psnr"]["n"] == real.alive[:, 15].sum() and frozen[16]["artifact"]["n"] == 6


def test_f1_counts_real_events_over_live_frames():
    real = real_rollouts("policy", [0], starts=2, context_frames=2, n_actions=5, horizon=4)
    real.rewards[:] = 0.0
    real.rewards[0, 1] = 1.0
    shape = real.rewards.shape
    scores = FrameScores(*(np.zeros(shape) for _ in range(4)), np.zeros(shape, bool), real.rewards.copy(), np.zeros(shape))
    row = summarise(scores, real, [4])[4]
    assert row["reward_f1"] == {"mean": 1.0, "std": 0.0, "n": 1}
    assert np.isnan(row["termination_f1"]["mean"]) or row["termination_f1"]["mean"] == 0.0


def test_bad_configs_are_refused_before_any_work():
    with pytest.raises(ValueError, match="checkpoint"):
        validate(EvalConfig())
    with pytest.raises(ValueError, match="adversarial"):
        validate(EvalConfig(checkpoints=["x"], adversarial=["spin"]))
    with pytest.raises(ValueError, match="names"):
        validate(EvalConfig(checkpoints=["x"], names=["a", "b"]))


def test_the_command_writes_tables_json_plots_and_videos_and_resumes_from_its_cache(tmp_path, monkeypatch):
    from train.probe import Probe, save_probe

    probe = save_probe(Probe(8), tmp_path / "probe", {})
    ckpt = save_untrained(tmp_path / "ckpt", bank=2, context=2)
    cfg = EvalConfig(checkpoints=[str(ckpt)], names=["untrained"], horizons=[1, 6], seeds=[0, 1], starts=2,
                     adversarial=["hold", "noop"], adversarial_starts=1, probe=str(probe), out=str(tmp_path / "eval"),
                     videos=1, video_frames=4)
    results = main(cfg)
    assert set(results) == {"policy", "hold", "noop"}
    assert set(results["policy"]) == {REAL, COPY_LAST, "untrained"}
    stats = results["policy"]["untrained"][6]
    assert set(stats) == {"psnr", "ssim", "pos_err", "artifact", "score_violation", "reward_f1", "termination_f1"}
    assert stats["artifact"]["n"] == 4 and 0.0 <= stats["artifact"]["mean"] <= 1.0
    out = tmp_path / "eval"
    assert "## scenario: hold" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["results"]["noop"]["untrained"]["1"]["pos_err"]["n"] >= 0
    assert (out / "error_vs_horizon_policy.png").stat().st_size > 0
    assert (out / "videos" / "policy_start0.mp4").stat().st_size > 0

    monkeypatch.setattr(train.eval, "dream_frames", lambda *a, **k: pytest.fail("a cached model was rolled out again"))
    assert json.dumps(main(cfg)["policy"]["untrained"][6]) == json.dumps(stats)      # nan-safe equality

