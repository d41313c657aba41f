"""`python -m train.pipeline`: the whole chain on the tiny preset, resumable, every stage loadable; its defaults are the
recipe of the bundled checkpoint, read from configs/."""
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
    assert list(outputs) == ["autoencoder", "teacher", "df", "self_forcing", "tf"]
    for stage, path in outputs.items():
        model = worldmodel.load(path)
        assert (model.dit is None) == (stage == "autoencoder")
    assert worldmodel.load(outputs["self_forcing"]).config.stage == "self_forcing_dmd"
    # CoinChase has an entity reader: every DiT stage draws the enemy's and the coin's cells with the events stage's
    # model
    events_dir = tmp_path / "runs/coinchase/events/checkpoint"
    # its extra recording: play that goes on after a catch
    assert (tmp_path / "data/coinchase/mixed-events-v0").is_dir()
    event_model = load_event_model(events_dir)
    for stage in ("teacher", "df", "self_forcing", "tf"):
        dit = worldmodel.load(outputs[stage]).dit
        assert dit.config.event_channels == 2
        for name, value in event_model.state_dict().items():
            assert torch.equal(dit.event_model.state_dict()[name], value), (stage, name)
    # and CoinChase shows a score: the causal models carry it as state (the score bar, trained on a long recording too)
    assert (tmp_path / "data/coinchase/score-v0").is_dir()
    assert worldmodel.load(outputs["teacher"]).dit.config.score_digits == 0
    for stage in ("df", "self_forcing", "tf"):
        assert worldmodel.load(outputs[stage]).dit.config.score_digits == 3
    # and every DiT is given the player's cell (the event model's player head) as one more drawn cell
    for stage in ("teacher", "df", "self_forcing", "tf"):
        config = worldmodel.load(outputs[stage]).dit.config
        assert (config.event_player, config.player_channel, config.drawn_cells) == (True, True, 3)
        assert config.event_reach[0] == config.event_reach[2] == 1      # the enemy and the player step one cell a frame
    # and they paint where two drawn cells meet (the enemy on the coin, on the player) with latents fitted on the
    # events' recording (trained without those cells); a pair the recording never shows in one cell is NaN, not painted
    for stage in ("df", "self_forcing", "tf"):
        dit = worldmodel.load(outputs[stage]).dit
        fitted = torch.isfinite(dit.overlap_latents).all(-1)
        assert dit.config.overlap_paint and dit.overlap_latents.shape == (3, 8) and bool(fitted.any())
        assert bool(dit.overlap_latents[fitted].abs().sum() > 0) and bool(dit.overlap_latents[~fitted].isnan().all())
    assert not worldmodel.load(outputs["teacher"]).dit.config.overlap_paint
    env = WorldModelEnv(outputs["self_forcing"])
    obs, _ = env.reset(seed=0)
    assert env.step(1)[0].shape == obs.shape == (64, 64, 3)
    # training Self Forcing longer resumes it, though its student (df) got the score bar installed since
    longer = tiny(tmp_path, stages="[score_bar,self_forcing]", **{"overrides.self_forcing": "['loop.max_steps=5']"})
    run(longer)
    assert json.loads((tmp_path / "runs/coinchase/self_forcing/train_state/state.json").read_text())["step"] == 5
    assert worldmodel.load(outputs["self_forcing"]).dit.config.score_digits == 3


def test_rerunning_a_finished_pipeline_resumes_instead_of_retraining(tmp_path):
    cfg = tiny(tmp_path, stages="[record,autoencoder,teacher]")
    run(cfg)
    metrics = tmp_path / "runs/coinchase/teacher/metrics.jsonl"
    before = metrics.read_text()
    run(cfg)
    assert metrics.read_text() == before
    steps = [json.loads(line)["step"] for line in before.splitlines()]
    assert max(steps) == 10


def test_a_game_without_a_reader_gets_codes_where_the_past_fails_and_every_dit_stage_samples_them(tmp_path):
    outputs = run(tiny(tmp_path, game="catch", env_id="dreamgym/Catch-v0",
                       stages="[record,autoencoder,teacher,self_forcing]"))
    assert list(outputs) == ["autoencoder", "teacher", "df", "self_forcing"]
    assert (tmp_path / "runs/catch/autoencoder/latents/events.safetensors").is_file()      # the codes of every frame
    assert (tmp_path / "runs/catch/codes/checkpoint/surprise_model.safetensors").is_file()
    # the evaluation lines them up with the real game's random events, read from the recording
    from train.eval.codes import CodesEvalConfig, main as codes_eval  # noqa: PLC0415

    report = codes_eval(compose("eval_codes", CodesEvalConfig, [f"autoencoder_dir={tmp_path}/runs/catch/autoencoder",
                                                                 "dataset_id=catch/random-v0",
                                                                 f"data_root={tmp_path}/data"]))
    assert report["train"]["steps"] == sum(len(e.actions) for e in catch_latents(tmp_path).train)
    assert set(report["train"]["recall"]) == set(report["train"]["recall_next_step"]) == {"respawn"}
    assert len(report["train"]["coded_per_slot"]) == 2
    for stage in ("teacher", "df", "self_forcing"):
        config = worldmodel.load(outputs[stage]).dit.config
        assert config.event_channels == 2 and not config.player_channel and not config.score_digits
    assert worldmodel.load(outputs["self_forcing"]).config.env_id == "dreamgym/Catch-v0"
    env = WorldModelEnv(outputs["self_forcing"])
    obs, _ = env.reset(seed=0)
    assert env.step(2)[0].shape == obs.shape == (64, 64, 3)


def catch_latents(tmp_path):
    from train.common.latents import load_latents  # noqa: PLC0415

    return load_latents(tmp_path / "runs/catch/autoencoder/latents")


def test_without_codes_a_game_without_a_reader_trains_the_plain_dit(tmp_path):
    outputs = run(tiny(tmp_path, reader="''", codes=0, stages="[record,autoencoder,teacher]"))
    assert worldmodel.load(outputs["teacher"]).dit.config.event_channels == 0
    assert not (tmp_path / "runs/coinchase/events").exists()


def test_unknown_stage_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown stages"):
        run(tiny(tmp_path, stages="[record,distill]"))


def test_the_game_is_named_by_the_recipe_not_the_code(tmp_path):
    # configs/pipeline.yaml names the bundled game; without it there is no game to learn, and no default one
    from train.pipeline import PipelineConfig, stage_list

    assert PipelineConfig().env_id == "" and tiny(tmp_path).env_id == "dreamgym/CoinChase-v0"
    with pytest.raises(ValueError, match="env_id is empty"):
        stage_list(tiny(tmp_path, env_id="''"))


def test_the_coinchase_plugin_weighs_its_score_bar_and_a_game_without_one_gets_the_generic_recipe(tmp_path):
    from train.pipeline import stage_list

    coinchase = tiny(tmp_path)
    assert {"++hud_rows=8", "++hud_weight=20.0", "++sprite_weight=20.0"} <= set(stage_overrides(coinchase, "decoder"))
    assert "policy=mixed" in stage_overrides(coinchase, "record")
    other = tiny(tmp_path, game="pong", env_id="ALE/Pong-v5")
    assert not [o for o in stage_overrides(other, "decoder") if "hud_" in o or "sprite_weight" in o]
    assert "policy=random" in stage_overrides(other, "record")                 # plays any Discrete(n) env
    assert stage_list(other) == ["record", "autoencoder", "decoder", "codes", "events", "teacher", "df",
                                 "self_forcing"]
    assert "slots=2" in stage_overrides(other, "codes")                        # labelled in the reader's place
    assert not [o for o in stage_overrides(other, "autoencoder") if "sprite_weight" in o]   # configs/ hold the recipe's
    teacher = stage_overrides(other, "teacher")
    assert "events_dir=" + other.run_dir("events") in teacher and "player_channel=true" not in teacher


def test_the_autoencoder_weighs_sprites_for_any_game_and_the_bundled_plugin_keeps_its_autoencoder(tmp_path):
    from train.stages.autoencoder import AutoencoderStageConfig

    other = compose("autoencoder", AutoencoderStageConfig, stage_overrides(tiny(tmp_path, env_id="dreamgym/Catch-v0",
                                                                                preset="small"), "autoencoder"))
    assert (other.sprite_weight, other.loop.max_steps) == (20.0, 4000)
    bundled = compose("autoencoder", AutoencoderStageConfig, stage_overrides(tiny(tmp_path, preset="small"),
                                                                             "autoencoder"))
    assert (bundled.sprite_weight, bundled.loop.max_steps) == (1.0, 1500)


def test_the_game_is_named_after_the_env_id_and_its_plugin_names_the_reader_module(tmp_path):
    default = tiny(tmp_path)
    assert default.game == "coinchase" and "events=envs.coinchase_labels" in stage_overrides(default, "autoencoder")
    assert "reader=envs.coinchase_labels" in stage_overrides(default, "events")
    other = tiny(tmp_path, env_id="dreamgym/Catch-v0")
    assert other.game == "catch" and other.entity_reader == "" and not other.player_on
    assert tiny(tmp_path, game="mine", env_id="dreamgym/Catch-v0").run_dir("teacher").endswith("mine/teacher")


def test_the_default_recipe_is_the_bundled_checkpoints(tmp_path):
    """configs/ hold the values that made envs/checkpoints/coinchase; the pipeline adds only wiring."""
    from train.stages.forcing import ForcingConfig
    from train.stages.self_forcing import SelfForcingConfig

    bundle = json.loads(open("envs/checkpoints/coinchase/config.json").read())
    default = compose("pipeline", PipelineConfig, [f"root={tmp_path}"])
    assert default.student == "df" and default.preset == "small"
    df = compose("forcing", ForcingConfig, stage_overrides(default, "df"))
    sf = compose("self_forcing", SelfForcingConfig, stage_overrides(default, "self_forcing"))
    for cfg in (df, sf):
        assert (cfg.size, cfg.window, cfg.chunk, cfg.sink) == ("small", bundle["dit"]["window"], 1, 0)
        assert cfg.player_channel and cfg.paint_overlaps and cfg.events_dir
    assert (df.mode, df.clip_frames, df.lr, df.change_weight, df.loop.max_steps) == ("df", 4, 2e-3, 5.0, 3000)
    assert (sf.lr, sf.critic_lr, sf.critic_ratio, sf.batch_size, sf.loop.max_steps) == (2e-4, 1e-4, 3, 16, 600)
    assert sf.student_dir.endswith("coinchase/df") and sf.sampler.steps == bundle["sampler"]["steps"]


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        run(tiny(tmp_path, preset="huge"))


def test_students_must_match_their_teachers_player_channel():
    from train.common.dit_stage import DiTStageConfig, check_teacher_events
    from worldmodel.config import DiTConfig

    teacher = DiTConfig(event_channels=2, event_outcomes=True, event_player=True, player_channel=True)
    check_teacher_events(DiTStageConfig(player_channel=True), teacher)
    with pytest.raises(ValueError, match="player_channel=True"):
        check_teacher_events(DiTStageConfig(), teacher)


def test_self_forcing_starts_from_the_diffusion_forcing_model_or_from_ode_init(tmp_path):
    from train.pipeline import stage_list

    default, from_ode = tiny(tmp_path), tiny(tmp_path, student="ode_init")
    assert stage_list(default)[-3:] == ["teacher", "df", "self_forcing"]
    assert stage_list(from_ode)[-3:] == ["teacher", "ode_init", "self_forcing"]
    assert f"student_dir={tmp_path}/runs/coinchase/df" in stage_overrides(default, "self_forcing")
    assert f"student_dir={tmp_path}/runs/coinchase/ode_init" in stage_overrides(from_ode, "self_forcing")
    assert f"teacher_dir={tmp_path}/runs/coinchase/teacher" in stage_overrides(default, "self_forcing")
    assert stage_list(tiny(tmp_path, baselines="true"))[-3:] == ["df", "self_forcing", "tf"]
    with pytest.raises(ValueError, match="student"):
        stage_list(tiny(tmp_path, student="teacher"))
