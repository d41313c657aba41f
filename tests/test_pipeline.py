"""`python -m train.pipeline`: the whole chain on the tiny preset, resumable, every stage loadable."""
import json

import pytest
import torch

import worldmodel
from envs.world_model_env import WorldModelEnv
from train.common.cli import compose
from train.pipeline import PipelineConfig, run, stage_overrides
from worldmodel.events import load_event_model


def tiny(tmp_path, **kwargs) -> PipelineConfig:
    overrides = [f"root={tmp_path}/runs", f"data_root={tmp_path}/data", "preset=tiny", "progress=false"]
    return compose("pipeline", PipelineConfig, overrides + [f"{k}={v}" for k, v in kwargs.items()])


def test_tiny_pipeline_runs_end_to_end_and_every_stage_loads(tmp_path):
    outputs = run(tiny(tmp_path, baselines="true"))
    assert list(outputs) == ["autoencoder", "teacher", "ode_init", "self_forcing", "tf", "df"]
    for stage, path in outputs.items():
        model = worldmodel.load(path)
        assert (model.dit is None) == (stage == "autoencoder")
    assert worldmodel.load(outputs["self_forcing"]).config.stage == "self_forcing_dmd"
    # CoinChase has an entity reader: every DiT stage draws the enemy's and the coin's cells with the events stage's model
    events_dir = tmp_path / "runs/coinchase/events/checkpoint"
    assert (tmp_path / "data/coinchase/mixed-events-v0").is_dir()   # its extra recording: play that goes on after a catch
    event_model = load_event_model(events_dir)
    for stage in ("teacher", "ode_init", "self_forcing", "tf", "df"):
        dit = worldmodel.load(outputs[stage]).dit
        assert dit.config.event_channels == 2
        for name, value in event_model.state_dict().items():
            assert torch.equal(dit.event_model.state_dict()[name], value), (stage, name)
    # and CoinChase shows a score: the causal models carry it as state (the score bar, trained on a long recording too)
    assert (tmp_path / "data/coinchase/score-v0").is_dir()
    assert worldmodel.load(outputs["teacher"]).dit.config.score_digits == 0
    for stage in ("ode_init", "self_forcing", "tf", "df"):
        assert worldmodel.load(outputs[stage]).dit.config.score_digits == 3
    # and every DiT is given the player's cell (the event model's player head) as one more drawn cell
    for stage in ("teacher", "ode_init", "self_forcing", "tf", "df"):
        config = worldmodel.load(outputs[stage]).dit.config
        assert (config.event_player, config.player_channel, config.drawn_cells) == (True, True, 3)
        assert config.event_reach[0] == config.event_reach[2] == 1      # the enemy and the player step one cell a frame
    # and they paint where two drawn cells meet (the enemy on the coin, on the player) with latents fitted on the events'
    # recording (trained without those cells); a pair the recording never shows in one cell is NaN, not painted
    for stage in ("ode_init", "self_forcing", "tf", "df"):
        dit = worldmodel.load(outputs[stage]).dit
        fitted = torch.isfinite(dit.overlap_latents).all(-1)
        assert dit.config.overlap_paint and dit.overlap_latents.shape == (3, 8) and bool(fitted.any())
        assert bool(dit.overlap_latents[fitted].abs().sum() > 0) and bool(dit.overlap_latents[~fitted].isnan().all())
    assert not worldmodel.load(outputs["teacher"]).dit.config.overlap_paint
    env = WorldModelEnv(outputs["self_forcing"])
    obs, _ = env.reset(seed=0)
    assert env.step(1)[0].shape == obs.shape == (64, 64, 3)
    # training Self Forcing longer resumes it, though its student (ode_init) got the score bar installed since
    longer = tiny(tmp_path, stages="[score_bar,self_forcing]", **{"overrides.self_forcing": "['loop.max_steps=5']"})
    run(longer)
    assert json.loads((tmp_path / "runs/coinchase/self_forcing/train_state/state.json").read_text())["step"] == 5
    assert worldmodel.load(outputs["self_forcing"]).dit.config.score_digits == 3


def test_tiny_pipeline_with_the_catch_channel_trains_on_play_after_catches_and_dreams(tmp_path):
    outputs = run(tiny(tmp_path, catch="true", player="false", **{"overrides.events": "['player=true']"}))
    latents = tmp_path / "runs/coinchase/autoencoder/latents"
    assert json.loads((latents / "datasets.json").read_text()) == ["coinchase/mixed-v0", "coinchase/mixed-events-v0"]
    for stage in ("teacher", "ode_init", "self_forcing"):
        config = worldmodel.load(outputs[stage]).dit.config
        assert (config.catch_entity, config.event_inputs, config.event_player) == (0, 3, True)   # + the player head
    env = WorldModelEnv(outputs["self_forcing"])
    obs, _ = env.reset(seed=0)
    assert env.step(1)[0].shape == obs.shape == (64, 64, 3)


def test_rerunning_a_finished_pipeline_resumes_instead_of_retraining(tmp_path):
    cfg = tiny(tmp_path, stages="[record,autoencoder,teacher]")
    run(cfg)
    metrics = tmp_path / "runs/coinchase/teacher/metrics.jsonl"
    before = metrics.read_text()
    run(cfg)
    assert metrics.read_text() == before
    steps = [json.loads(line)["step"] for line in before.splitlines()]
    assert max(steps) == 10


def test_a_game_without_an_entity_reader_trains_without_events(tmp_path):
    outputs = run(tiny(tmp_path, events="''", stages="[record,autoencoder,teacher]"))
    assert worldmodel.load(outputs["teacher"]).dit.config.event_channels == 0
    assert not (tmp_path / "runs/coinchase/events").exists()


def test_unknown_stage_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown stages"):
        run(tiny(tmp_path, stages="[record,distill]"))


def test_the_coinchase_decoder_stage_weighs_its_score_bar_and_other_games_do_not(tmp_path):
    coinchase = stage_overrides(tiny(tmp_path), "decoder")
    assert {"hud_rows=8", "hud_weight=20", "sprite_weight=20"} <= set(coinchase)
    other = stage_overrides(tiny(tmp_path, game="pong", env_id="ALE/Pong-v5"), "decoder")
    assert not [o for o in other if o.startswith(("hud_", "sprite_weight"))]



def test_catch_wires_the_catch_channel_into_every_dit_stage_and_students_must_match_their_teacher(tmp_path):
    from train.common.dit_stage import DiTStageConfig, check_teacher_events
    from worldmodel.config import DiTConfig

    on, off = tiny(tmp_path, catch="true", baselines="true"), tiny(tmp_path, baselines="true", player="false")
    for stage in ("teacher", "ode_init", "self_forcing", "tf", "df"):
        assert "catch_entity=0" in stage_overrides(on, stage)          # CoinChase's enemy
        assert not [o for o in stage_overrides(off, stage) if o.startswith("catch_entity")]
    for stage in ("events", "score_bar", "autoencoder"):
        assert not [o for o in stage_overrides(on, stage) if o.startswith("catch_entity")]
    # what follows a catch: the events' recording (play goes on after a catch) joins the latent cache, so every
    # DiT stage and the event model's heads train on it (not beside it, as without the catch channel)
    assert "cache_datasets=[coinchase/mixed-events-v0]" in stage_overrides(on, "autoencoder")
    assert "extra_datasets=[]" in stage_overrides(on, "events")
    assert not [o for o in stage_overrides(off, "autoencoder") if o.startswith("cache_datasets")]
    assert "extra_datasets=[coinchase/mixed-events-v0]" in stage_overrides(off, "events")
    teacher = DiTConfig(event_channels=2, event_outcomes=True, catch_entity=0)
    check_teacher_events(DiTStageConfig(catch_entity=0), teacher)
    with pytest.raises(ValueError, match="catch_entity=0"):
        check_teacher_events(DiTStageConfig(), teacher)


def test_self_forcing_can_start_from_the_diffusion_forcing_model_trained_in_ode_inits_place(tmp_path):
    from train.pipeline import stage_list

    default, from_df = tiny(tmp_path), tiny(tmp_path, student="df")
    assert stage_list(default)[-2:] == ["ode_init", "self_forcing"]
    assert stage_list(from_df)[-3:] == ["teacher", "df", "self_forcing"]          # no ODE init; DF first
    assert f"student_dir={tmp_path}/runs/coinchase/df" in stage_overrides(from_df, "self_forcing")
    assert f"teacher_dir={tmp_path}/runs/coinchase/teacher" in stage_overrides(from_df, "self_forcing")
    assert stage_list(tiny(tmp_path, student="df", baselines="true"))[-3:] == ["df", "self_forcing", "tf"]
    with pytest.raises(ValueError, match="student"):
        stage_list(tiny(tmp_path, student="teacher"))
