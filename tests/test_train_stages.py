"""Every training stage on the tiny config: it learns (loss falls a lot), writes a loadable checkpoint,
and a run interrupted by SIGKILL resumes to exactly the state of an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import BUNDLED_ENV_ID
from train.stages import autoencoder, decoder, forcing, ode_init, self_forcing, teacher
from train.common.cli import compose
from train.common.latents import load_latents
from train.common.loop import NonFiniteLoss, STATE_DIR
from train.stages.record import RecordConfig, record
from worldmodel import load
from worldmodel.data import load_episodes

REPO = Path(__file__).resolve().parents[1]
TINY_AE = ["model.widths=[8,16,32]", "model.latent_channels=4", "batch_size=8", "warmup_steps=1", "lr=3e-3",
           "start_bank_size=4", "loop.progress=false", "loop.log_every=5"]
# the stages' own defaults, not the bundled recipe's (configs/<stage>.yaml) long-run shapes and schedule
TINY_DIT = ["size=tiny", "batch_size=8", "warmup_steps=1", "lr=2e-3", "lr_final=1.0", "clip_frames=8", "window=7",
            "change_weight=20", "loop.progress=false", "loop.log_every=5"]


def losses(run_dir: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in rows if key in row]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-episode recording, a tiny autoencoder and teacher trained on it."""
    root = tmp_path_factory.mktemp("stages")
    record(RecordConfig(env_id=BUNDLED_ENV_ID,
                        episodes=4, seed=3, dataset_id="test/stages-v0", root=str(root / "data"), progress=False))
    common = [f"data_root={root / 'data'}", "dataset_id=test/stages-v0"]
    autoencoder.main(compose("autoencoder", autoencoder.AutoencoderStageConfig,
                             TINY_AE + common + [f"run_dir={root / 'ae'}", "loop.max_steps=60", "loop.eval_every=60"]))
    teacher.main(compose("teacher", teacher.TeacherConfig,
                         TINY_DIT + [f"autoencoder_dir={root / 'ae'}", f"run_dir={root / 'teacher'}",
                                     "loop.max_steps=60"]))
    return root


def test_autoencoder_learns_and_writes_latents_and_checkpoint(runs):
    curve = losses(runs / "ae", "train/loss")
    assert curve[-1] < curve[0] / 1.5           # the recipe's sprite weight keeps the loss up on the sprites' pixels
    model = load(runs / "ae" / "checkpoint")
    assert model.dit is None and model.config.stage == "autoencoder"
    assert (runs / "ae" / "latents" / "latents.safetensors").exists()


def test_teacher_learns_and_is_bidirectional(runs):
    curve = losses(runs / "teacher", "train/loss")
    assert curve[-1] < curve[0] / 2
    assert not load(runs / "teacher" / "checkpoint").dit.config.causal


def test_decoder_stage_trains_the_decoder_only_and_rewrites_the_autoencoder_in_place(runs):
    shutil.copytree(runs / "ae", runs / "ae_sharp")
    before = load(runs / "ae_sharp" / "checkpoint")
    decoder.main(compose("decoder", decoder.DecoderStageConfig, [
        f"autoencoder_dir={runs / 'ae_sharp'}", f"run_dir={runs / 'decoder'}", f"data_root={runs / 'data'}",
        "dataset_id=test/stages-v0", "batch_size=8", "loop.max_steps=6", "loop.eval_every=6", "loop.progress=false",
        "decoder=null"]))                                   # fine-tune the source's own decoder
    after = load(runs / "ae_sharp" / "checkpoint")
    assert after.config == before.config and torch.equal(after.start_frames, before.start_frames)
    old, new = before.autoencoder.state_dict(), after.autoencoder.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old if not k.startswith("decoder."))     # encoder, latent scale
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))


def test_decoder_stage_extra_datasets_join_the_training_frames_encoded(runs):
    cfg = compose("decoder", decoder.DecoderStageConfig, [
        f"autoencoder_dir={runs / 'ae'}", f"data_root={runs / 'data'}", "dataset_id=test/stages-v0",
        "extra_datasets=[test/stages-v0]"])
    model = load(runs / "ae" / "checkpoint").autoencoder.eval()
    data = autoencoder.load_data(autoencoder.AutoencoderStageConfig(dataset_id=cfg.dataset_id, data_root=cfg.data_root))
    main_frames = len(data.train_frames)
    latents = decoder.add_extra_frames(cfg, data, model, decoder.cached_latents(cfg, data, model))
    all_frames = main_frames + sum(len(e.frames) for e in data.split[0] + data.split[1])   # the extra: every episode
    assert len(data.train_frames) == len(latents) == all_frames
    with torch.no_grad():
        assert torch.allclose(model.encode(torch.from_numpy(data.train_frames[-3:])), torch.from_numpy(latents[-3:]),
                              atol=1e-5)


@pytest.mark.parametrize("mode", ["tf", "df"])
def test_forcing_baselines_learn_a_causal_model(runs, mode):
    run_dir = runs / mode
    forcing.main(compose("forcing", forcing.ForcingConfig, TINY_DIT + [
        f"mode={mode}", f"autoencoder_dir={runs / 'ae'}", f"run_dir={run_dir}", "loop.max_steps=60"]))
    curve = losses(run_dir, "train/loss")
    assert curve[-1] < curve[0] * 0.75            # the first logged step (5) has already fallen from ~2
    model = load(run_dir / "checkpoint")
    assert model.dit.config.causal and model.config.stage == mode


def test_ode_init_then_self_forcing_produce_loadable_students(runs):
    ode = ode_init.main(compose("ode_init", ode_init.ODEInitConfig, TINY_DIT + [
        f"autoencoder_dir={runs / 'ae'}", f"teacher_dir={runs / 'teacher'}", f"run_dir={runs / 'ode'}",
        "trajectories=16", "sample_batch=16", "euler_steps=8", "loop.max_steps=10"]))
    assert ode["train/x0_loss"] < losses(runs / "ode", "train/x0_loss")[0]
    metrics = self_forcing.main(compose("self_forcing", self_forcing.SelfForcingConfig, TINY_DIT + [
        f"autoencoder_dir={runs / 'ae'}", f"teacher_dir={runs / 'teacher'}", f"student_dir={runs / 'ode'}",
        f"run_dir={runs / 'sf'}", "loop.max_steps=4", "critic_ratio=2", "sid_weight=0.5", "gan_weight=0.5",
        "gan_sigma_max=0.5",
        "r1_weight=0.1", "r2_weight=0.1"]))
    assert "train/critic_flow" in metrics
    model = load(runs / "sf" / "checkpoint")
    assert model.dit.config.causal and model.config.stage == "self_forcing_dmd+sid+gan"


def _teacher_cmd(runs: Path, run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "train.stages.teacher", *TINY_DIT, f"autoencoder_dir={runs / 'ae'}",
            f"run_dir={run_dir}",
            f"loop.max_steps={steps}", "loop.ckpt_every=2", "loop.eval_every=0", "loop.threads=1"]


def test_training_killed_with_sigkill_resumes_to_the_same_state(runs):
    whole, killed = runs / "whole", runs / "killed"
    subprocess.run(_teacher_cmd(runs, whole, 12), check=True, cwd=REPO, capture_output=True)
    process = subprocess.Popen(_teacher_cmd(runs, killed, 12), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / STATE_DIR / "state.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    step_at_kill = json.loads((killed / STATE_DIR / "state.json").read_text())["step"]
    assert step_at_kill < 12
    subprocess.run(_teacher_cmd(runs, killed, 12), check=True, cwd=REPO, capture_output=True)
    a, b = load(whole / "checkpoint").dit.state_dict(), load(killed / "checkpoint").dit.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(runs, monkeypatch):
    run_dir = runs / "nan"
    cfg = compose("forcing", forcing.ForcingConfig, TINY_DIT + [f"autoencoder_dir={runs / 'ae'}", f"run_dir={run_dir}",
                                                                "loop.max_steps=4", "loop.ckpt_every=2"])
    real_step = forcing.train_step

    def poisoned(state, dataset, cfg):
        metrics = real_step(state, dataset, cfg)
        return {**metrics, "loss": float("nan")} if state.step >= 2 else metrics

    monkeypatch.setattr(forcing, "train_step", poisoned)
    with pytest.raises(NonFiniteLoss, match="non-finite"):
        forcing.main(cfg)
    assert json.loads((run_dir / STATE_DIR / "state.json").read_text())["step"] == 2
    assert load(run_dir / "checkpoint").dit is not None


def test_the_fast_rules_probe_scores_a_causal_model_and_a_teachers_samples(runs):
    from train.eval import one_step

    if not (runs / "tf" / "checkpoint").exists():
        forcing.main(compose("forcing", forcing.ForcingConfig, TINY_DIT + [
            "mode=tf", f"autoencoder_dir={runs / 'ae'}", f"run_dir={runs / 'tf'}", "loop.max_steps=5"]))
    result = one_step.main(one_step.OneStepConfig(
        checkpoint=str(runs / "tf" / "checkpoint"), latents=str(runs / "ae" / "latents"), clips=4, seeds=[],
        teacher=str(runs / "teacher" / "checkpoint"), teacher_clips=2, euler_steps=2))
    rates = [*result["one_step"].values(), *result["teacher_samples"].values(), *result["teacher_context"].values()]
    assert set(result["teacher_context"]) == {"player", "coin", "enemy"}
    assert all(0.0 <= r <= 1.0 or r != r for r in rates)      # rates (nan where a split is empty)
    held_out = load_latents(runs / "ae" / "latents")
    ending = [e for e in (held_out.val or held_out.train) if len(e) >= 4 and e.terminations[-1]]
    assert result["terminal_exact"].get("clips", 0) == len(ending)      # one clip per episode ended by a catch
    assert all(0.0 <= result["terminal_exact"][k] <= 1.0 for k in ("both", "player", "enemy") if ending)


def test_a_finished_autoencoder_stage_re_encodes_its_cache_for_other_datasets_and_keeps_its_checkpoint(runs):
    shutil.copytree(runs / "ae", runs / "ae_cache")
    record(RecordConfig(env_id=BUNDLED_ENV_ID,
                        episodes=2, seed=5, dataset_id="test/extra-v0", root=str(runs / "data"), progress=False))
    checkpoint_bytes = (runs / "ae_cache" / "checkpoint" / "autoencoder.safetensors").read_bytes()
    cfg = compose("autoencoder", autoencoder.AutoencoderStageConfig,
                  TINY_AE + [f"data_root={runs / 'data'}", "dataset_id=test/stages-v0", f"run_dir={runs / 'ae_cache'}",
                             "loop.max_steps=60", "cache_datasets=[test/extra-v0]"])
    before = load_latents(runs / "ae_cache" / "latents")
    autoencoder.main(cfg)
    after = load_latents(runs / "ae_cache" / "latents")
    extra, _ = load_episodes("test/extra-v0", runs / "data")
    assert len(after.train) + len(after.val) == len(before.train) + len(before.val) + len(extra)
    for old, new in zip(before.train, after.train):          # the main recording's latents first, unchanged
        assert np.allclose(old.frames, new.frames, atol=1e-5)
    assert torch.equal(after.start_frames, before.start_frames)     # the start bank stays the main recording's
    assert (runs / "ae_cache" / "checkpoint" / "autoencoder.safetensors").read_bytes() == checkpoint_bytes
    mtime = (runs / "ae_cache" / "latents" / "latents.safetensors").stat().st_mtime_ns
    autoencoder.main(cfg)                                     # current now: nothing is re-encoded
    assert (runs / "ae_cache" / "latents" / "latents.safetensors").stat().st_mtime_ns == mtime


def test_a_stage_knows_it_already_trained_from_its_saved_step_and_output_alone(tmp_path):
    from train.common.loop import LoopConfig, already_trained

    output = tmp_path / "checkpoint"
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "state.json").write_text(json.dumps({"step": 10}))
    assert not already_trained(tmp_path, LoopConfig(max_steps=10), output)        # no output yet
    output.mkdir()
    assert already_trained(tmp_path, LoopConfig(max_steps=10), output)
    assert not already_trained(tmp_path, LoopConfig(max_steps=11), output)        # asked to train longer
    (tmp_path / STATE_DIR / "state.json").write_text("{")
    assert not already_trained(tmp_path, LoopConfig(max_steps=10), output)   # unreadable: train (load_state says why)
