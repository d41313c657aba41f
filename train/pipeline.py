"""The whole chain in one command: record -> autoencoder -> decoder -> [events -> score_bar] -> teacher -> df ->
self_forcing (+ tf, and ode_init when it is the student).

This file keeps only the order of the stages and their wiring (which run dir feeds which stage). The recipe lives in
configs/: each stage's values in `configs/<stage>.yaml` (the bundled checkpoint's), a preset's variants in
`configs/presets/<preset>.yaml`, and a game's plug-in (its frame reader, its extra recordings) in
`configs/games/<game>.yaml`. A game without a plug-in trains from frames and actions alone: the codes stage labels
`codes` code slots in the reader's place (train.stages.codes: the cells a surprise model cannot predict), which the
events stage then learns to sample (codes -> events -> teacher -> df -> self_forcing). Each stage resumes where
it stopped (a finished stage is a no-op), so re-running the command after a kill continues the chain. Every DiT
stage leaves a checkpoint dir `<root>/<game>/<stage>/checkpoint` that `worldmodel.load` opens.

    python -m train.pipeline                                                  # the bundled recipe, on the bundled game
    python -m train.pipeline env_id=dreamgym/Catch-v0                         # any image Gymnasium env (game=catch)
    python -m train.pipeline preset=tiny root=/tmp/dg                         # minutes, for smoke tests
    python -m train.pipeline baselines=true                                   # + the TF baseline
    python -m train.pipeline game=pong env_id=ALE/Pong-v5 from_dataset=atari/pong/expert-v0   # a Minari dataset
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from train.common.cli import CONFIG_DIR, compose, hydra_main
from train.common.plugins import game_name, game_plugin, load_reader

STAGES = ("record", "autoencoder", "decoder", "codes", "events", "score_bar", "teacher", "ode_init", "df",
          "self_forcing", "tf")
STUDENTS = ("ode_init", "df")   # the stages Self Forcing's generator may start from
SCORED = ("ode_init", "self_forcing", "tf", "df")   # the causal stages whose checkpoints get the score bar at the end
RECORDINGS = ("record", "record_events", "record_score")  # the main recording, the extra ones of events, score bar


@dataclass
class PipelineConfig:
    game: str = ""                        # names the datasets and run dirs; configs/games/<game>.yaml, if any,
                                          #   plugs in that game's reader and extra recordings; "" = env_id's name,
                                          #   lower case, without its version (train.common.plugins.game_name)
    env_id: str = ""                      # the real game recorded in stage 0 (any Gymnasium id with image frames
                                          #   and Discrete actions)
    policy: str = ""                      # recording policy (envs.policies); "" = the game plug-in's, else random
    from_dataset: str = ""                # start from this existing Minari dataset (converted by the record stage)
                                          #   instead of recording env_id
    root: str = "runs"                    # run dirs: <root>/<game>/<stage>
    data_root: str = "data/minari"        # Minari datasets root
    preset: str = "small"                 # small (the bundled recipe) | tiny (seconds): configs/presets/<preset>.yaml
    baselines: bool = False               # also train the TF baseline (and DF, when it is not the student)
    stages: list[str] = field(default_factory=lambda: ["record", "autoencoder", "decoder", "events", "score_bar",
                                                       "teacher", "self_forcing"])
    reader: str = "auto"                  # frame reader labelling the random entities (a module, or a game whose
                                          #   plug-in names one: train.common.plugins.load_reader): "auto" = the
                                          #   game plug-in's, "" = none (frames and actions alone)
    codes: int = 2                        # without a reader: code slots on the cells the past and the keys do not
                                          #   predict (train.stages.codes), sampled at play by the event model; 0 = none
    player: bool = True                   # with a reader: the DiT is told the player's next cell (player channel)
    paint_overlaps: bool = True           # with a reader: where two drawn cells meet, the finished models paint the
                                          #   latent fitted on the events' recording (DiTConfig.overlap_paint)
    student: str = "df"                   # Self Forcing's generator starts from: df (the diffusion-forcing model,
                                          #   the bundled recipe) | ode_init (the paper's regression on teacher ODE
                                          #   pairs)
    device: str = "cpu"
    progress: bool = True
    # extra hydra overrides per stage, e.g. 'overrides.teacher=["lr=1e-4"]' (quoted: "=" inside a list)
    overrides: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in STAGES})

    def __post_init__(self) -> None:
        self.game = self.game or game_name(self.env_id)

    @property
    def plugin(self) -> dict[str, Any]:
        """configs/games/<game>.yaml as a dict ({} for a game without one)."""
        return game_plugin(self.game)

    @property
    def entity_reader(self) -> str:
        return self.plugin.get("reader", "") if self.reader == "auto" else self.reader

    @property
    def recording_policy(self) -> str:
        return "imported" if self.from_dataset else self.policy or self.plugin.get("policy", "random")

    @property
    def dataset_id(self) -> str:
        return f"{self.game}/{self.recording_policy}-v0"

    def recording_id(self, stage: str) -> str:
        """The Minari dataset a recording stage (RECORDINGS) writes."""
        return {"record": self.dataset_id, "record_events": f"{self.game}/{self.recording_policy}-events-v0",
                "record_score": f"{self.game}/score-v0"}[stage]

    def has_recording(self, stage: str) -> bool:
        """An extra recording (record_events, record_score) exists where the game plug-in describes one."""
        return stage in self.plugin.get("stages", {})

    @property
    def learns_codes(self) -> bool:
        """No reader: the codes stage labels code slots, and the events stage learns their prior."""
        return not self.entity_reader and self.codes > 0

    @property
    def player_on(self) -> bool:
        """The DiT stages get the player's cell as an event channel (and the latent cache the events' recording)."""
        if not (self.player and self.entity_reader and self.has_recording("record_events")):
            return False
        return load_reader(self.entity_reader).player_cells is not None

    @property
    def paints_overlaps(self) -> bool:
        """The causal models paint where two entities meet (fitted on the events' recording, which must exist)."""
        return self.paint_overlaps and bool(self.entity_reader) and self.has_recording("record_events")

    def run_dir(self, stage: str) -> str:
        return str(Path(self.root) / self.game / stage)


def stage_list(cfg: PipelineConfig) -> list[str]:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown or not (Path(CONFIG_DIR) / "presets" / f"{cfg.preset}.yaml").is_file():
        raise ValueError(f"unknown stages {unknown} or preset {cfg.preset!r}; stages: {STAGES}, presets: "
                         f"{sorted(p.stem for p in (Path(CONFIG_DIR) / 'presets').glob('*.yaml'))}")
    if not (cfg.env_id or cfg.from_dataset):
        raise ValueError("env_id is empty: name the Gymnasium id of the game to learn (or from_dataset=ID)")
    if cfg.student not in STUDENTS:
        raise ValueError(f"student must be one of {STUDENTS}, got {cfg.student!r}")
    wanted = set(cfg.stages) | ({"tf", "df"} if cfg.baselines else set())
    if "self_forcing" in wanted:
        wanted.add(cfg.student)
    if cfg.learns_codes and wanted & {"teacher", "ode_init", "df", "self_forcing", "tf"}:   # they draw the codes
        wanted |= {"codes", "events"}
    # no reader: no score bar (it rises by the event model's reward and needs the game's recording), and events only
    # over learned codes
    return [s for s in STAGES if s in wanted and (s != "events" or cfg.entity_reader or cfg.learns_codes)
            and (s != "codes" or cfg.learns_codes)
            and (s != "score_bar" or (cfg.entity_reader and cfg.has_recording("record_score")))]


def as_overrides(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Nested config values as hydra overrides: `++a.b=1` (set, or add a key inside a dict-typed field)."""
    def render(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ",".join(render(v) for v in value) + "]"
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    out = []
    for key, value in values.items():
        nested = isinstance(value, dict)
        out += as_overrides(value, f"{prefix}{key}.") if nested else [f"++{prefix}{key}={render(value)}"]
    return out


def recipe_overrides(cfg: PipelineConfig, stage: str) -> list[str]:
    """The game plug-in's values for `stage`, then the preset's (configs/games, configs/presets)."""
    preset = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "presets" / f"{cfg.preset}.yaml")) or {}
    return as_overrides(cfg.plugin.get("stages", {}).get(stage, {})) + as_overrides(preset.get(stage, {}))


def stage_overrides(cfg: PipelineConfig, stage: str) -> list[str]:
    """The hydra overrides of `stage`: its wiring to the earlier stages' outputs, then the recipe's game and preset
    values, then the user's."""
    common = [f"loop.device={cfg.device}", f"loop.progress={cfg.progress}"]
    if stage in RECORDINGS:
        wiring = [f"env_id={cfg.env_id}", f"dataset_id={cfg.recording_id(stage)}", f"root={cfg.data_root}",
                  f"progress={cfg.progress}"]
        wiring += [f"from_dataset={cfg.from_dataset}"] if cfg.from_dataset and stage == "record" else \
            [f"policy={'random' if cfg.from_dataset else cfg.recording_policy}"]
        common = []
    elif stage == "score_bar":
        wiring = [f"run_dir={cfg.run_dir(stage)}", f"autoencoder={Path(cfg.run_dir('autoencoder')) / 'checkpoint'}",
                  f"dataset_id={cfg.dataset_id}", f"data_root={cfg.data_root}",
                  f"extra_datasets=[{cfg.recording_id('record_score')}]"]
    elif stage in ("autoencoder", "decoder"):
        wiring = [f"dataset_id={cfg.dataset_id}", f"data_root={cfg.data_root}", f"run_dir={cfg.run_dir(stage)}"]
        if stage == "decoder":
            wiring.append(f"autoencoder_dir={cfg.run_dir('autoencoder')}")
        else:
            wiring.append(f"events={cfg.entity_reader}")
            if cfg.player_on:     # the DiT stages learn what follows a termination from play that goes on
                wiring.append(f"cache_datasets=[{cfg.recording_id('record_events')}]")
    else:
        wiring = [f"run_dir={cfg.run_dir(stage)}", f"autoencoder_dir={cfg.run_dir('autoencoder')}"]
        if stage == "codes":
            wiring.append(f"slots={cfg.codes}")
        elif stage != "events" and (cfg.entity_reader or cfg.learns_codes) and (
                "events" in stage_list(cfg) or (Path(cfg.run_dir("events")) / "checkpoint").exists()):
            wiring.append(f"events_dir={cfg.run_dir('events')}")
            if cfg.player_on:
                wiring.append("player_channel=true")
            if cfg.paints_overlaps:    # the cells the finished models paint are not theirs to learn
                wiring.append("paint_overlaps=true")
        if stage == "events":  # the extra recording: in the latent cache already with the player channel, else beside
            beside = cfg.has_recording("record_events") and not cfg.player_on
            extra = cfg.recording_id("record_events") if beside else ""
            wiring += [f"data_root={cfg.data_root}", f"reader={cfg.entity_reader}", f"extra_datasets=[{extra}]",
                       f"player={cfg.player_on}"]
        if stage in ("tf", "df"):
            wiring.append(f"mode={stage}")
        if stage in ("ode_init", "self_forcing"):
            wiring.append(f"teacher_dir={cfg.run_dir('teacher')}")
        if stage == "self_forcing":
            wiring.append(f"student_dir={cfg.run_dir(cfg.student)}")
    return common + wiring + recipe_overrides(cfg, stage) + list(cfg.overrides.get(stage, []))


# pipeline stage -> (its module in train.stages, which is also its configs/<name>.yaml; config class; entry point)
RUNNERS: dict[str, tuple[str, str, str]] = {
    "record": ("record", "RecordConfig", "record"),
    "record_events": ("record", "RecordConfig", "record"),
    "record_score": ("record", "RecordConfig", "record"),
    "autoencoder": ("autoencoder", "AutoencoderStageConfig", "main"),
    "decoder": ("decoder", "DecoderStageConfig", "main"),
    "codes": ("codes", "CodesStageConfig", "main"),
    "events": ("events", "EventsStageConfig", "main"),
    "score_bar": ("score_bar", "ScoreBarStageConfig", "main"),
    "teacher": ("teacher", "TeacherConfig", "main"),
    "ode_init": ("ode_init", "ODEInitConfig", "main"),
    "self_forcing": ("self_forcing", "SelfForcingConfig", "main"),
    "tf": ("forcing", "ForcingConfig", "main"),
    "df": ("forcing", "ForcingConfig", "main"),
}


def run_stage(cfg: PipelineConfig, stage: str) -> None:
    if stage in ("events", "autoencoder") and cfg.entity_reader and cfg.has_recording("record_events") \
            and (stage == "events" or cfg.player_on):
        run_stage(cfg, "record_events")                 # the events' extra recording first (player: in the cache too)
    if stage == "score_bar":                            # and the score bar's
        run_stage(cfg, "record_score")
    overrides = stage_overrides(cfg, stage)
    if stage in RECORDINGS:
        from envs.recording import dataset_path  # noqa: PLC0415

        dataset_id = cfg.recording_id(stage)
        if dataset_path(dataset_id, cfg.data_root).exists():   # datasets appear only when complete
            print(f"[pipeline] {stage}: {dataset_id} exists, kept")
            return
    name, config, entry = RUNNERS[stage]
    module = importlib.import_module(f"train.stages.{name}")      # lazily: a stage loads only what it needs
    getattr(module, entry)(compose(name, getattr(module, config), overrides))


def run(cfg: PipelineConfig) -> dict[str, Path]:
    """Run the chain; returns each DiT stage's checkpoint dir (and the autoencoder's)."""
    stages = stage_list(cfg)
    outputs: dict[str, Path] = {}
    start = time.perf_counter()
    for index, stage in enumerate(stages, 1):
        print(f"[pipeline] stage {index}/{len(stages)}: {stage}  ({time.perf_counter() - start:.0f} s elapsed)",
              flush=True)
        run_stage(cfg, stage)
        if stage not in ("record", "decoder", "codes", "events", "score_bar"):   # decoder: rewrites the autoencoder
            outputs[stage] = Path(cfg.run_dir(stage)) / "checkpoint"   # checkpoint; codes: labels its cache; events,
                                                                       # score bar: installed into the models
    if "score_bar" in stages:
        from train.stages.score_bar import install  # noqa: PLC0415

        install(Path(cfg.run_dir("score_bar")) / "checkpoint", [str(outputs[s]) for s in SCORED if s in outputs])
    if cfg.paints_overlaps and (Path(cfg.run_dir("events")) / "checkpoint").exists():
        from train.stages.events import EventsStageConfig, install_overlap_paint  # noqa: PLC0415

        events = compose("events", EventsStageConfig,      # fitted on the events' recording
                         [*stage_overrides(cfg, "events"), f"extra_datasets=[{cfg.recording_id('record_events')}]"])
        install_overlap_paint(events, [str(outputs[s]) for s in SCORED if s in outputs])
    print(f"[pipeline] done in {time.perf_counter() - start:.0f} s: " +
          ", ".join(f"{s} -> {p}" for s, p in outputs.items()), flush=True)
    return outputs


if __name__ == "__main__":
    hydra_main("pipeline", PipelineConfig, run)
