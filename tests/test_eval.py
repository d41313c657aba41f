"""train.eval: metric functions on known inputs, the real rollouts it compares against, and the command end to end
(the rules check itself: tests/test_eval_rules.py; the reader: tests/test_coinchase_reader.py)."""
import json

import cv2
import numpy as np
import pytest

import train.eval.run
from envs.coinchase import PALETTE, CoinChaseEnv
from envs.dream import DreamCore
from train.eval.run import COPY_LAST, REAL, EvalConfig, _cached, main, make_reader, sampling_of, summarise, validate
from train.eval.rollouts import (DEFAULT_READER, MISSING_PLAYER, FrameScores, ScriptedActions, copy_last_frames,
                                 player_cells, position_error, real_frames, real_rollouts, score_rollout,
                                 score_violations)
from train.eval.rules import RulesCheck
from worldmodel.flow import sigma_schedule
from worldmodel.metrics import palette_artifact_rate, psnr, ssim
from train.common.untrained import save_untrained


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained CoinChase checkpoint with a bank of 2 real contexts of 2 frames."""
    return save_untrained(tmp_path_factory.mktemp("untrained") / "ckpt", bank=2, context=2)


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
    unreadable = score_violations(np.array([-1, 7]), np.array([5, -1]), np.zeros(2, bool), np.zeros(2, bool))
    assert unreadable.tolist() == [True, False]              # unreadable: a violation; a step from one: not judged


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
    assert a.coins.shape == a.enemies.shape == (4, 12, 2) and a.scores.shape == (4, 12)
    assert a.head(5).frames.shape[1] == 5 and np.array_equal(a.head(5).context, a.context)
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
    perfect = summarise(score_rollout(real_frames(real), real)[0], real, [1, 16])
    assert perfect[16]["psnr"]["mean"] == 60.0 and perfect[16]["pos_err"]["mean"] == 0.0
    assert perfect[16]["artifact"]["mean"] == 0.0 and perfect[16]["score_violation"]["mean"] == 0.0
    frozen = summarise(score_rollout(copy_last_frames(real), real)[0], real, [1, 16])
    assert frozen[16]["psnr"]["mean"] < 60.0 and frozen[16]["pos_err"]["mean"] > 0.0
    assert frozen[16]["psnr"]["n"] == real.alive[:, 15].sum() and frozen[16]["artifact"]["n"] == 6


def test_the_rules_check_rides_on_score_rollout_as_a_tap():
    real = real_rollouts("policy", [0], starts=2, context_frames=2, n_actions=5, horizon=4)
    check = RulesCheck(real)
    score_rollout(real_frames(real), real, taps=(check,))
    assert check.scores().player_exact.shape == (2, 4) and not check.scores().violation.any()


def test_f1_counts_real_events_over_live_frames():
    real = real_rollouts("policy", [0], starts=2, context_frames=2, n_actions=5, horizon=4)
    real.rewards[:] = 0.0
    real.rewards[0, 1] = 1.0
    shape = real.rewards.shape
    zeros = [np.zeros(shape) for _ in range(4)]
    scores = FrameScores(*zeros, np.zeros(shape, bool), real.rewards.copy(), np.zeros(shape))
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
    with pytest.raises(ValueError, match="denoise_steps"):
        validate(EvalConfig(checkpoints=["x"], denoise_steps=-1))


def test_the_deterministic_reader_is_the_default_and_a_probe_is_opt_in(tmp_path):
    from train.probe.model import Probe, save_probe

    assert EvalConfig().probe == "" and make_reader("") is DEFAULT_READER
    cells, scores = make_reader(str(save_probe(Probe(8), tmp_path / "probe", {})))(np.zeros((2, 64, 64, 3), np.uint8))
    assert cells.shape == (2, 2) and scores.shape == (2,)


def test_models_sample_with_their_checkpoints_steps_unless_told_otherwise(checkpoint):
    assert EvalConfig().denoise_steps == 0
    own = sampling_of(DreamCore(checkpoint, 1, denoise_steps=0))
    fewer = sampling_of(DreamCore(checkpoint, 1, denoise_steps=2))
    ckpt = own["checkpoint"]
    assert own["steps"] == ckpt["steps"] and fewer["steps"] == 2
    assert own["sigmas"] == pytest.approx(sigma_schedule(ckpt["steps"], ckpt["shift"], ckpt["max_steps"]), abs=1e-4)
    assert len(fewer["sigmas"]) == 2 and fewer["sigmas"][0] == 1.0


def test_a_cache_entry_missing_an_array_is_computed_again(tmp_path):
    path = tmp_path / "entry.npz"
    np.savez(path, a=np.zeros(2))                                   # written by an older eval: no "b"
    got = _cached(path, ["a", "b"], lambda arrays: True, lambda: {"a": np.ones(2), "b": np.ones(3)})
    assert got["b"].shape == (3,)
    assert _cached(path, ["a", "b"], lambda arrays: True, lambda: pytest.fail("not read back"))["a"].tolist() == [1, 1]


def test_the_command_writes_tables_json_plots_and_videos_and_resumes_from_its_cache(checkpoint, tmp_path, monkeypatch,
                                                                                    capsys):
    cfg = EvalConfig(checkpoints=[str(checkpoint)], names=["untrained"], horizons=[1, 6], seeds=[0, 1], starts=2,
                     adversarial=["hold", "noop"], adversarial_starts=1, out=str(tmp_path / "eval"), videos=1,
                     video_frames=4)
    report = main(cfg)
    results, rules = report["results"], report["rules"]
    assert set(results) == set(rules["horizons"]) == set(rules["controllability"]) == {"policy", "hold", "noop"}
    assert set(results["policy"]) == set(rules["horizons"]["policy"]) == {REAL, COPY_LAST, "untrained"}
    stats = results["policy"]["untrained"][6]
    assert set(stats) == {"psnr", "ssim", "pos_err", "artifact", "score_violation", "reward_f1", "termination_f1"}
    assert stats["artifact"]["n"] == 4 and 0.0 <= stats["artifact"]["mean"] <= 1.0
    real_rules = rules["horizons"]["policy"][REAL][6]
    assert real_rules["violation"]["mean"] == 0.0 and real_rules["player_exact"]["mean"] == 1.0
    assert rules["horizons"]["policy"]["untrained"][6]["psnr"] == stats["psnr"]
    assert set(rules["controllability"]["policy"]) == {COPY_LAST, "untrained"}      # 6 frames: h=4 only
    assert set(rules["controllability"]["policy"]["untrained"]) == {4}
    assert report["sampling"]["untrained"]["steps"] == 4
    assert "untrained samples with 4 denoising steps" in capsys.readouterr().out
    out = tmp_path / "eval"
    text = (out / "results.md").read_text()
    assert text.index("## Rules check") < text.index("## Frame metrics") and "### scenario: hold" in text
    assert "## " not in text[:text.index("## Rules check")]                          # the first section
    saved = json.loads((out / "results.json").read_text())
    assert saved["rules"]["horizons"]["noop"]["untrained"]["1"]["violation"]["n"] == 2
    assert saved["results"]["noop"]["untrained"]["1"]["pos_err"]["n"] >= 0
    for png in ("error_vs_horizon_policy.png", "rules_vs_horizon_policy.png", "rules_vs_horizon_noop.png"):
        assert (out / png).stat().st_size > 0
    assert (out / "videos" / "policy_start0.mp4").stat().st_size > 0

    monkeypatch.setattr(train.eval.run, "dream_frames",
                        lambda *a, **k: pytest.fail("a cached model was rolled out again"))
    for plot in ("plot_rules", "plot_horizons"):                   # already checked above; slow
        monkeypatch.setattr(train.eval.run, plot, lambda *a, **k: [])
    again = main(cfg)
    assert json.dumps(again["results"]["policy"]["untrained"][6]) == json.dumps(stats)   # nan-safe
    assert json.dumps(again["rules"]) == json.dumps(rules)


def test_the_picture_puts_the_real_game_above_the_dream_for_every_frame(untrained_checkpoint, tmp_path):
    from train.eval.picture import PictureConfig, main as picture, strips

    cfg = PictureConfig(checkpoint=str(untrained_checkpoint), out=str(tmp_path / "p.png"), frames_per_key=2, scale=1)
    real, dream = strips(cfg)
    assert real.shape == dream.shape == (1 + 3 * 2, 64, 64, 3)
    assert (real[0] == dream[0]).all()                       # both start from the last real context frame
    import cv2
    image = cv2.imread(str(picture(cfg)))
    assert image.shape == (2 * 64 + 4, 7 * (64 + 2), 3)
