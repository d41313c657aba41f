"""The whole chain in one command: record -> autoencoder -> decoder -> events -> score_bar -> teacher -> ode_init ->
self_forcing (+ tf, df).

Each stage is the same code as its own `python -m train.stages.<stage>` entry, composed from its YAML with
the overrides below, and each resumes where it stopped (a finished stage is a no-op that rewrites
nothing it does not need to), so re-running the command after a kill continues the chain. Every
DiT stage leaves a checkpoint dir `<root>/<game>/<stage>/checkpoint` that `worldmodel.load` opens.

    python -m train.pipeline game=coinchase                                   # the bundled game
    python -m train.pipeline game=pong env_id=ALE/Pong-v5 baselines=true      # any image Gymnasium env
    python -m train.pipeline preset=tiny root=/tmp/dg                         # minutes, for smoke tests
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from train.common.cli import compose, hydra_main

STAGES = ("record", "autoencoder", "decoder", "events", "score_bar", "teacher", "ode_init", "self_forcing", "tf", "df")
STUDENTS = ("ode_init", "df")   # the stages Self Forcing's generator may start from
SCORED = ("ode_init", "self_forcing", "tf", "df")   # the causal stages whose checkpoints get the score bar at the end
RECORDINGS = ("record", "record_events", "record_score")   # the main recording, the events' and the score bar's extra ones

# Shapes and optimiser of every DiT stage in the "small" recipe (measured in docs/ablation.md): the game is
# Markov in one frame, so a 3-frame window and 4-frame clips; lr 2e-3 learns the rules several times faster
# per step than lr 3e-4.
SHAPES = ["clip_frames=4", "window=3", "batch_size=32"]
# Sprite-cell loss weight 5, not 20: at 20 the empty floor carries ~1/20 of the weight and the teacher seeds false
# enemies far from the real one from each cell's own noise (two or more enemies after 3 clean frames: 39 % at 20,
# 19 % at 5, 9 % at 1 but with the enemy vanishing more often; docs/ablation.md, session 7).
SPRITE_WEIGHT = ["change_weight=5"]
# Long flow-model runs: lr 2e-3 cosine-decayed to 5 %, EMA 0.995 (the checkpoints hold the EMA).
LONG = ["lr=2e-3", "lr_final=0.05", "ema_decay=0.995"]
# Undistilled flow models (teacher, TF, DF) get more, gentler steps than the students: 8 re-noising steps at
# shift 3 (measured on a TF model: player exact at frame 8 61 % vs 45 % with the students' 4 steps at shift 5
# and 31 % with 16 Euler steps; docs/ablation.md).
FLOW_SAMPLER = ["sampler.solver=renoise", "sampler.steps=8", "sampler.max_steps=8", "sampler.shift=3.0"]

# Entity reader -> the extra recording its event model also trains on: CoinChase play that goes on after a catch (a
# recorded episode ends at a catch, so the enemy on the player is never a previous frame there, yet lethal=False play
# reaches it: the event model without it put 77 % of the enemy's mass on unreachable cells there; docs/ablation.md).
EVENT_RECORDINGS: dict[str, list[str]] = {"coinchase": ["+env_kwargs.lethal=false"]}

# Entity reader -> the entity whose cell the DiT's catch channel repeats when a step terminates (DiTConfig.catch_entity):
# CoinChase's enemy (entity 0), landing on the player.
CATCH_ENTITIES: dict[str, int] = {"coinchase": 0}

# Game -> the recording its score bar stage also trains on (worldmodel.score_bar): long coin-seeker play that goes on
# after a catch counts past 100, where the main recording stops at 33 (a digit never seen in a place is never drawn).
SCORE_RECORDINGS: dict[str, list[str]] = {"coinchase": ["policy=seeker", "+env_kwargs.lethal=false"]}

# Game -> its decoder stage's HUD: CoinChase's score bar is the top 8 pixel rows; its changing pixels (the digits)
# weigh 20 whether lit or not, sprites 20 (session 9, docs/ablation.md: real frames' score read back 75 % vs 39 %,
# violations per frame of the bundled model's dream 0.447 vs 0.490 at h <= 1000)
DECODER_HUD: dict[str, list[str]] = {"coinchase": ["sprite_weight=20", "hud_rows=8", "hud_weight=20"]}

# preset -> per-stage overrides; "small" is the bundled checkpoint's recipe on 2 CPU cores
PRESETS: dict[str, dict[str, list[str]]] = {
    "small": {
        "record": ["episodes=2500"],
        "record_events": ["episodes=300", "max_episode_steps=150", "seed=7"],
        "autoencoder": ["loop.max_steps=1500"],
        # the light cell decoder from scratch behind the frozen encoder, on noised latents (latent_noise 0.2) so it
        # draws a world model's imperfect latents as real ones: 46 dB held out, 11 vs 167 MFLOP per frame; on the
        # bundled model's dream, walls broken in 1.0 % of frames to h = 128 (conv 8.5 %, cell without noise 23 %)
        "decoder": ["decoder=cell", "latent_noise=0.2", "lr=2e-3", "lr_final=0.05", "loop.max_steps=10000"],
        # transitions from an overlap (the enemy on the player or the coin; 4 % of the cache) drawn 10x as often: the
        # event model's mass on cells the enemy cannot reach from the player's cell 3.8 % -> 0.85 % (measured as a
        # 1,000-step fine-tune of session 14's model, README "Session 15")
        "events": ["loop.max_steps=3000", "overlap_weight=10"],
        "record_score": ["episodes=40", "max_episode_steps=1000", "seed=11"],
        "score_bar": ["loop.max_steps=10000"],
        "teacher": ["size=small", *SHAPES, *LONG, *SPRITE_WEIGHT, "loop.max_steps=3000", "clean_prefix_prob=1.0",
                    "shared_sigma_prob=0.5", *FLOW_SAMPLER],
        "ode_init": ["size=small", *SHAPES, *SPRITE_WEIGHT, "lr=5e-4", "loop.max_steps=400", "trajectories=1024"],
        "self_forcing": ["size=small", "clip_frames=4", "window=3", "batch_size=16", "lr=2e-4", "critic_lr=1e-4",
                         "critic_ratio=3", "loop.max_steps=600", "loop.ckpt_every=50"],
        "tf": ["size=small", *SHAPES, *LONG, *SPRITE_WEIGHT, "loop.max_steps=3000", *FLOW_SAMPLER],
        "df": ["size=small", *SHAPES, *LONG, *SPRITE_WEIGHT, "loop.max_steps=3000", *FLOW_SAMPLER],
    },
    "tiny": {
        "record": ["episodes=6", "max_episode_steps=40"],
        "record_events": ["episodes=4", "max_episode_steps=80", "seed=7"],   # shows the enemy on the coin (overlap paint)
        "autoencoder": ["loop.max_steps=20", "batch_size=8", "model.widths=[8,8,8]", "eval_frames=16",
                        "start_bank_size=4", "loop.eval_every=0"],
        "decoder": ["decoder=cell", "latent_noise=0.2", "loop.max_steps=4", "batch_size=8", "eval_frames=16",
                    "loop.eval_every=0"],
        "events": ["loop.max_steps=10", "batch_size=16", "loop.eval_every=0", "dim=16", "depth=1"],
        "record_score": ["episodes=2", "max_episode_steps=30", "seed=11"],
        "score_bar": ["loop.max_steps=10", "batch_size=16", "loop.eval_every=0", "dim=16"],
        "teacher": ["size=tiny", "loop.max_steps=10", "batch_size=4", "loop.eval_every=0"],
        "ode_init": ["size=tiny", "loop.max_steps=5", "batch_size=4", "trajectories=8", "euler_steps=8",
                     "sample_batch=8"],
        "self_forcing": ["size=tiny", "loop.max_steps=3", "batch_size=2", "critic_ratio=1"],
        "tf": ["size=tiny", "loop.max_steps=10", "batch_size=4", "loop.eval_every=0"],
        "df": ["size=tiny", "loop.max_steps=10", "batch_size=4", "loop.eval_every=0"],
    },
}


@dataclass
class PipelineConfig:
    game: str = "coinchase"                   # names the dataset and the run dirs
    env_id: str = "dreamgym/CoinChase-v0"     # the real game recorded in stage 0
    policy: str = "mixed"                     # recording policy (random | seeker | mixed)
    root: str = "runs"                        # run dirs: <root>/<game>/<stage>
    data_root: str = "data/minari"            # Minari datasets root
    preset: str = "small"                     # small | tiny (see PRESETS)
    baselines: bool = False                   # also train the TF and DF baselines
    stages: list[str] = field(default_factory=lambda: ["record", "autoencoder", "decoder", "events", "score_bar", "teacher",
                                                                    "ode_init", "self_forcing"])
    events: str = "auto"                      # entity reader labelling the random entities (train.common.events.READERS);
                                              #   "auto": the game's own reader if there is one (coinchase), "" = none
    catch: bool = False                       # the DiT stages get the catch channel (CATCH_ENTITIES) of the entity reader
    player: bool = True                       # the event model learns the player's next cell and the DiT stages get it as
                                              #   one more event channel (DiTConfig.player_channel), trained on the events'
                                              #   recording too (play that goes on after a catch); README "Session 14"
    paint_overlaps: bool = True               # the causal stages' checkpoints paint where two drawn entities meet (the
                                              #   enemy on the coin) with a latent fitted on the events' recording, at the
                                              #   end like the score bar (DiTConfig.overlap_paint; README "Session 13")
    student: str = "ode_init"                # Self Forcing's generator starts from: ode_init (the paper's: regression on
                                              #   the teacher's ODE pairs) | df (the diffusion-forcing model, trained first
                                              #   in place of ODE init; README "Session 15")
    device: str = "cpu"
    progress: bool = True
    # extra hydra overrides per stage, e.g. 'overrides.teacher=["lr=1e-4"]' (quoted: "=" inside a list)
    overrides: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in STAGES})

    @property
    def dataset_id(self) -> str:
        return f"{self.game}/{self.policy}-v0"

    @property
    def events_dataset_id(self) -> str:
        """The extra recording of the events stage (EVENT_RECORDINGS), or "" for a reader without one."""
        return f"{self.game}/{self.policy}-events-v0" if self.entity_reader in EVENT_RECORDINGS else ""

    @property
    def score_dataset_id(self) -> str:
        """The extra recording of the score bar stage (SCORE_RECORDINGS)."""
        return f"{self.game}/score-v0"

    def recording_id(self, stage: str) -> str:
        """The Minari dataset a recording stage (RECORDINGS) writes."""
        return {"record": self.dataset_id, "record_events": self.events_dataset_id, "record_score": self.score_dataset_id}[stage]

    def recording_overrides(self, stage: str) -> list[str]:
        """The policy and env settings of a recording stage: the main recording's policy, with the events' extra
        env settings; the score bar's own policy and settings."""
        if stage == "record_score":
            return SCORE_RECORDINGS.get(self.game, [])
        return [f"policy={self.policy}", *(EVENT_RECORDINGS.get(self.entity_reader, []) if stage == "record_events" else [])]

    @property
    def entity_reader(self) -> str:
        from train.common.events import READERS  # noqa: PLC0415

        return (self.game if self.game in READERS else "") if self.events == "auto" else self.events

    @property
    def catch_on(self) -> bool:
        """The DiT stages get the catch channel (and the latent cache the events' recording, where the catches go on)."""
        return self.catch and self.entity_reader in CATCH_ENTITIES and bool(self.events_dataset_id)

    @property
    def player_on(self) -> bool:
        """The DiT stages get the player's cell as an event channel (and the latent cache the events' recording)."""
        from train.common.events import PLAYER_READERS  # noqa: PLC0415

        return self.player and self.entity_reader in PLAYER_READERS and bool(self.events_dataset_id)

    @property
    def events_in_cache(self) -> bool:
        """The events' recording is encoded into the latent cache, so every stage trains on play after catches."""
        return self.catch_on or self.player_on

    @property
    def paints_overlaps(self) -> bool:
        """The causal models paint where two entities meet (fitted on the events' recording, which must exist)."""
        return self.paint_overlaps and bool(self.entity_reader) and bool(self.events_dataset_id)

    def run_dir(self, stage: str) -> str:
        return str(Path(self.root) / self.game / stage)


def stage_list(cfg: PipelineConfig) -> list[str]:
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown or cfg.preset not in PRESETS:
        raise ValueError(f"unknown stages {unknown} or preset {cfg.preset!r}; stages: {STAGES}, presets: {sorted(PRESETS)}")
    if cfg.student not in STUDENTS:
        raise ValueError(f"student must be one of {STUDENTS}, got {cfg.student!r}")
    wanted = list(cfg.stages) + (["tf", "df"] if cfg.baselines else [])
    order = list(STAGES)
    if cfg.student == "df" and "self_forcing" in wanted:      # DF trains before Self Forcing, in ODE init's place
        wanted = [s for s in wanted if s != "ode_init"] + ["df"]
        order.remove("df")
        order.insert(order.index("ode_init"), "df")
    # no reader: no entity events; the score bar rises by the event model's reward and needs the game's recording
    return [s for s in order if s in wanted and (s != "events" or cfg.entity_reader)
            and (s != "score_bar" or (cfg.entity_reader and cfg.game in SCORE_RECORDINGS))]


def stage_overrides(cfg: PipelineConfig, stage: str) -> list[str]:
    """The hydra overrides that wire `stage` to the earlier stages' outputs."""
    common = [f"loop.device={cfg.device}", f"loop.progress={cfg.progress}"]
    if stage in RECORDINGS:
        wiring = [f"env_id={cfg.env_id}", f"dataset_id={cfg.recording_id(stage)}", f"root={cfg.data_root}",
                  f"progress={cfg.progress}", *cfg.recording_overrides(stage)]
        common = []
    elif stage == "score_bar":
        wiring = [f"run_dir={cfg.run_dir(stage)}", f"autoencoder={Path(cfg.run_dir('autoencoder')) / 'checkpoint'}",
                  f"dataset_id={cfg.dataset_id}", f"data_root={cfg.data_root}", f"extra_datasets=[{cfg.score_dataset_id}]"]
    elif stage in ("autoencoder", "decoder"):
        wiring = [f"dataset_id={cfg.dataset_id}", f"data_root={cfg.data_root}", f"run_dir={cfg.run_dir(stage)}"]
        if stage == "decoder":
            wiring += [f"autoencoder_dir={cfg.run_dir('autoencoder')}", *DECODER_HUD.get(cfg.game, [])]
        else:
            wiring.append(f"events={cfg.entity_reader}")
            if cfg.events_in_cache:     # the DiT stages learn what follows a catch from play that goes on after one
                wiring.append(f"cache_datasets=[{cfg.events_dataset_id}]")
    else:
        wiring = [f"run_dir={cfg.run_dir(stage)}", f"autoencoder_dir={cfg.run_dir('autoencoder')}"]
        if stage != "events" and cfg.entity_reader and ("events" in stage_list(cfg)
                                                         or (Path(cfg.run_dir("events")) / "checkpoint").exists()):
            wiring.append(f"events_dir={cfg.run_dir('events')}")
            if cfg.catch_on:
                wiring.append(f"catch_entity={CATCH_ENTITIES[cfg.entity_reader]}")
            if cfg.player_on:
                wiring.append("player_channel=true")
            if cfg.paints_overlaps:    # the cells the finished models paint are not theirs to learn
                wiring.append("paint_overlaps=true")
        if stage == "events":      # the extra recording: in the latent cache already with the catch channel (all heads
            wiring += [f"data_root={cfg.data_root}", f"reader={cfg.entity_reader}",      # train on it), else beside it
                       f"extra_datasets=[{cfg.events_dataset_id}]" if cfg.events_dataset_id and not cfg.events_in_cache
                       else "extra_datasets=[]", f"player={cfg.player_on}"]
        if stage in ("tf", "df"):
            wiring.append(f"mode={stage}")
        if stage in ("ode_init", "self_forcing"):
            wiring.append(f"teacher_dir={cfg.run_dir('teacher')}")
        if stage == "self_forcing":
            wiring.append(f"student_dir={cfg.run_dir(cfg.student)}")
    return common + wiring + PRESETS[cfg.preset][stage] + list(cfg.overrides.get(stage, []))


# pipeline stage -> (its module in train.stages, which is also its configs/<name>.yaml; config class; entry point)
RUNNERS: dict[str, tuple[str, str, str]] = {
    "record": ("record", "RecordConfig", "record"),
    "record_events": ("record", "RecordConfig", "record"),
    "autoencoder": ("autoencoder", "AutoencoderStageConfig", "main"),
    "decoder": ("decoder", "DecoderStageConfig", "main"),
    "events": ("events", "EventsStageConfig", "main"),
    "record_score": ("record", "RecordConfig", "record"),
    "score_bar": ("score_bar", "ScoreBarStageConfig", "main"),
    "teacher": ("teacher", "TeacherConfig", "main"),
    "ode_init": ("ode_init", "ODEInitConfig", "main"),
    "self_forcing": ("self_forcing", "SelfForcingConfig", "main"),
    "tf": ("forcing", "ForcingConfig", "main"),
    "df": ("forcing", "ForcingConfig", "main"),
}


def run_stage(cfg: PipelineConfig, stage: str) -> None:
    if (stage == "events" or (stage == "autoencoder" and cfg.events_in_cache)) and cfg.events_dataset_id:
        run_stage(cfg, "record_events")                 # the events' extra recording first (catch: in the cache too)
    if stage == "score_bar":                            # and the score bar's
        run_stage(cfg, "record_score")
    overrides = stage_overrides(cfg, stage)
    if stage in RECORDINGS:
        from envs.recording import dataset_path

        dataset_id = cfg.recording_id(stage)
        if dataset_path(dataset_id, cfg.data_root).exists():   # datasets appear only when complete
            print(f"[pipeline] record: {dataset_id} exists, kept")
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
        print(f"[pipeline] stage {index}/{len(stages)}: {stage}  ({time.perf_counter() - start:.0f} s elapsed)", flush=True)
        run_stage(cfg, stage)
        if stage not in ("record", "decoder", "events", "score_bar"):   # decoder: rewrites the autoencoder checkpoint;
            outputs[stage] = Path(cfg.run_dir(stage)) / "checkpoint"      # events, score bar: installed into the models
    if "score_bar" in stages:
        from train.stages.score_bar import install  # noqa: PLC0415

        install(Path(cfg.run_dir("score_bar")) / "checkpoint", [str(outputs[s]) for s in SCORED if s in outputs])
    if cfg.paints_overlaps and (Path(cfg.run_dir("events")) / "checkpoint").exists():
        from train.stages.events import EventsStageConfig, install_overlap_paint  # noqa: PLC0415

        events = compose("events", EventsStageConfig,      # fitted on the events' recording (catch=true: in the cache)
                         [*stage_overrides(cfg, "events"), f"extra_datasets=[{cfg.events_dataset_id}]"])
        install_overlap_paint(events, [str(outputs[s]) for s in SCORED if s in outputs])
    print(f"[pipeline] done in {time.perf_counter() - start:.0f} s: " +
          ", ".join(f"{s} -> {p}" for s, p in outputs.items()), flush=True)
    return outputs


if __name__ == "__main__":
    hydra_main("pipeline", PipelineConfig, run)
