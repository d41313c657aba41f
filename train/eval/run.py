"""`python -m train.eval`: world models vs the real game, from the same real starts under the same actions.

For every checkpoint (plus the copy-last-frame baseline and the real game itself as a check of the
metrics) and every scenario (the "policy" rollouts and the adversarial "hold" / "alternate" /
"noop" scripts), rolls out `starts` real starts per seed and reports at each horizon, first the
rules check (train.eval.rules: player cell exact, one player / coin / enemy, walls, entities in
walls, enemy jumps, the score rule, rule violations per frame, Genie's controllability ΔPSNR),
then the frame metrics: PSNR, SSIM, player position error, palette artifact rate, score-consistency
violations (the read score falls, jumps, or rises without a predicted reward) and reward /
termination F1. Game state is read by the deterministic envs.coinchase_reader (`probe=<dir>` opts the
frame-metric tables into a learned train.probe). Means are over seeds (each seed's mean over its
rows) with the spread (std) across seeds; n counts the rows. Each model's sampling (denoising steps,
sigmas, its checkpoint's sampler) is printed and reported. Writes results.md, results.json, plots
(rules and error vs horizon) and side-by-side mp4s (real | models) to `out`. A model's scores are
cached under out/cache keyed by its weights, its sampling, the config and the noise stream version, so a killed
or extended evaluation resumes.

    python -m train.eval "checkpoints=[runs/coinchase/tf/checkpoint,runs/coinchase/self_forcing/checkpoint]"
    python -m train.eval "checkpoints=[...]" "adversarial=[]" "horizons=[1,8,32]"     # the rules check, fast
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from envs.dream import DreamCore, pick_dtype
from train.eval.report import markdown, plot_horizons, plot_rules, write_videos
from train.eval.rollouts import (DEFAULT_READER, EVENT, SCENARIOS, FrameScores, RealRollouts, Reader, Stream,
                                 concat_rows, copy_last_frames, dream_frames, over_seeds, real_frames, real_rollouts,
                                 score_rollout, take_rows)
from train.eval.rules import (CONTROL_HORIZONS, RuleScores, RulesCheck, controllability, pooled_f1, stream_psnr,
                              summarise_rules, with_random_actions)
from worldmodel.flow import sigma_schedule
from worldmodel.noise import STREAM_VERSION as NOISE_STREAM

COPY_LAST, REAL = "copy-last-frame", "real game"
SHARED = ("psnr", "artifact", "reward_f1", "termination_f1")   # frame-metric columns the rules table repeats
NOT_SCORED = ("checkpoints", "names", "out", "videos", "video_frames", "video_scale", "device", "threads",
              "controllability")                             # config keys that change no cached score
CACHED = [f.name for f in fields(FrameScores)] + [f"rules_{f.name}" for f in fields(RuleScores)] + ["video"]


@dataclass
class EvalConfig:
    checkpoints: list[str] = field(default_factory=list)        # causal chunk-1 checkpoint dirs
    names: list[str] = field(default_factory=list)              # display names (default: the run dir's name)
    horizons: list[int] = field(default_factory=lambda: [1, 8, 32, 128, 1000])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    starts: int = 8                   # real starts per seed, "policy" scenario
    adversarial: list[str] = field(default_factory=lambda: ["hold", "alternate", "noop"])
    adversarial_starts: int = 4       # real starts per seed, each adversarial scenario
    policy: str = "random"            # actions of the "policy" scenario: random (as recorded) | seeker
    min_repeat: int = 1               # persistence of the random policy (as recorded)
    max_repeat: int = 6
    chase_prob: float = 0.0           # real game's enemy: 0 wanders (the recording had 0.5; a chasing enemy that
                                      #   cannot kill sits on the player, a state the data never shows)
    lethal: bool = False              # real game: does being caught end the episode? False keeps every rollout
                                      #   comparable to the last horizon; catches are then termination events
    denoise_steps: int = 0            # denoising steps per frame; 0: each checkpoint's own sampler.steps
    controllability: bool = True      # also dream the first 16 frames under random actions (Genie's ΔPSNR)
    device: str = "cpu"
    dtype: str = "float32"            # the DiT's dtype in the dream (envs.dream.pick_dtype): bfloat16 checks the
                                      #   fast batched path
    threads: int = 0                  # torch threads; 0 keeps torch's default
    probe: str = ""                   # reader of the frame-metric tables: "" the deterministic envs.coinchase_reader,
                                      #   or a learned state probe's dir (train.probe); the rules check always reads
                                      #   with envs.coinchase_reader
    out: str = "runs/eval"
    videos: int = 2                   # "policy" starts written as side-by-side mp4s
    video_frames: int = 300
    video_scale: int = 3


@dataclass
class Rollout:
    """Everything scored on one stream: frame metrics and rule columns (S, Hmax), the first rows' frames
    (k, Hmax, H, W, 3), and the PSNR of the same starts dreamed under random actions (S, T) or None."""
    frame: FrameScores
    rules: RuleScores
    video: np.ndarray
    control_psnr: np.ndarray | None = None


def model_name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "checkpoint" else p.name


def sampling_of(core: DreamCore) -> dict:
    """How a model samples: the steps it runs, their sigmas, and its checkpoint's sampler config."""
    sampler = core.sampler
    sigmas = sigma_schedule(core.denoise_steps, sampler.shift, sampler.max_steps)     # as DreamCore samples
    return {"steps": core.denoise_steps, "sigmas": [round(s, 4) for s in sigmas],
            "checkpoint": {"steps": sampler.steps, "max_steps": sampler.max_steps, "shift": sampler.shift}}


def summarise(scores: FrameScores, real: RealRollouts, horizons: list[int]) -> dict[int, dict[str, dict]]:
    """Per horizon h: each metric's mean and std over seeds and its n.

    PSNR, SSIM and position error are read at frame h over rows whose real episode is alive there;
    artifact rate at frame h over all rows (it needs no reference); score violations per frame over
    frames 1..h, all rows; reward / termination F1 pooled over the live frames 1..h (n = real events)."""
    table = {}
    for h in horizons:
        live, every = real.alive[:, h - 1], np.ones(len(real.seeds), bool)
        row = {key: over_seeds(getattr(scores, key)[:, h - 1], mask, real.seeds)
               for key, mask in (("psnr", live), ("ssim", live), ("pos_err", live), ("artifact", every))}
        row["score_violation"] = over_seeds(scores.score_violation[:, :h].mean(1), every, real.seeds)
        window = real.alive[:, :h]
        row["reward_f1"] = pooled_f1(scores.reward[:, :h][window] > EVENT, real.rewards[:, :h][window] > EVENT)
        row["termination_f1"] = pooled_f1(scores.termination[:, :h][window] > EVENT, real.terminated[:, :h][window])
        table[h] = row
    return table


def _cache_key(path: str, cfg: EvalConfig, sampling: dict) -> str:
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).glob("*.safetensors"))
    scored = {k: v for k, v in asdict(cfg).items() if k not in NOT_SCORED}
    blob = json.dumps([str(Path(path).resolve()), weights, scored, sampling, NOISE_STREAM], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _cached(path: Path, keys: list[str], usable: Callable[[dict], bool], compute: Callable[[], dict[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
    """The arrays saved at `path` if it holds every key and passes `usable`, else `compute()`d and saved atomically."""
    if path.is_file():
        with np.load(path) as saved:
            arrays = {k: saved[k] for k in keys if k in saved}
        if len(arrays) == len(keys) and usable(arrays):
            return arrays
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)
    return arrays


def score_stream(stream: Stream, real: RealRollouts, reader: Reader, keep: int = 0) -> Rollout:
    """Frame metrics and the rules check of one stream, in one pass."""
    rules = RulesCheck(real)
    frame, video = score_rollout(stream, real, reader, keep, taps=(rules,))
    return Rollout(frame, rules.scores(), video)


def _to_arrays(rollout: Rollout) -> dict[str, np.ndarray]:
    rules = {f"rules_{f.name}": getattr(rollout.rules, f.name) for f in fields(RuleScores)}
    return asdict(rollout.frame) | rules | {"video": rollout.video}


def _from_arrays(arrays: dict[str, np.ndarray], keep: int) -> Rollout:
    rules = RuleScores(**{f.name: arrays[f"rules_{f.name}"] for f in fields(RuleScores)})
    return Rollout(FrameScores(**{f.name: arrays[f.name] for f in fields(FrameScores)}), rules, arrays["video"][:keep])


def model_rollout(name: str, path: str, real: RealRollouts, cfg: EvalConfig, reader: Reader, keep: int, sampling: dict,
                  n_actions: int) -> Rollout:
    """One checkpoint on every row of every scenario (one batched rollout, and with cfg.controllability the first
    frames again under random actions), cached under out/cache."""
    stem = Path(cfg.out) / "cache" / f"{name}-{_cache_key(path, cfg, sampling)}"

    def rolled_out() -> dict[str, np.ndarray]:
        print(f"[eval] {name}: {len(real.seeds)} rollouts x {real.actions.shape[1]} frames", flush=True)
        frames = dream_frames(path, real, cfg.device, cfg.denoise_steps, cfg.dtype)
        return _to_arrays(score_stream(frames, real, reader, keep))

    def under_random_actions() -> dict[str, np.ndarray]:
        shuffled = with_random_actions(real, max(CONTROL_HORIZONS), n_actions)
        return {"psnr": stream_psnr(dream_frames(path, shuffled, cfg.device, cfg.denoise_steps, cfg.dtype), shuffled)}

    # a cache entry without the video rows asked for now is rolled out again
    arrays = _cached(stem.with_suffix(".npz"), CACHED, lambda a: keep == 0 or len(a["video"]) >= keep, rolled_out)
    rollout = _from_arrays(arrays, keep)
    if cfg.controllability:
        control = _cached(stem.with_name(f"{stem.name}-control.npz"), ["psnr"], lambda a: True, under_random_actions)
        rollout.control_psnr = control["psnr"]
    return rollout


def baselines(real: RealRollouts, reader: Reader, cfg: EvalConfig, n_actions: int) -> dict[str, Rollout]:
    """The real game (the check of every metric: the rules check must find nothing) and copy-last-frame."""
    frozen = score_stream(copy_last_frames(real), real, reader)
    if cfg.controllability:
        shuffled = with_random_actions(real, max(CONTROL_HORIZONS), n_actions)
        frozen.control_psnr = stream_psnr(copy_last_frames(shuffled), shuffled)     # ignores actions: ΔPSNR 0
    return {REAL: score_stream(real_frames(real), real, reader), COPY_LAST: frozen}


def make_reader(probe: str) -> Reader:
    if not probe:
        return DEFAULT_READER
    from train.probe.model import load_probe

    loaded = load_probe(probe)
    return loaded.read


def validate(cfg: EvalConfig) -> None:
    if not cfg.checkpoints:
        raise ValueError("give at least one checkpoint: checkpoints='[path,...]'")
    if cfg.names and len(cfg.names) != len(cfg.checkpoints):
        raise ValueError(f"names has {len(cfg.names)} entries for {len(cfg.checkpoints)} checkpoints")
    if not cfg.horizons or min(cfg.horizons) < 1:
        raise ValueError(f"horizons must be positive frame counts, got {cfg.horizons}")
    unknown = [s for s in cfg.adversarial if s not in SCENARIOS[1:]]
    if unknown:
        raise ValueError(f"unknown adversarial scenarios {unknown}; choose from {SCENARIOS[1:]}")
    if not cfg.seeds or cfg.starts < 1:
        raise ValueError("need at least one seed and one start")
    if cfg.denoise_steps < 0:
        raise ValueError(f"denoise_steps must be >= 0 (0: the checkpoint's own), got {cfg.denoise_steps}")
    pick_dtype(cfg.dtype, torch.device(cfg.device), 1)     # a wrong name fails here, before any rollout


def all_scenarios(cfg: EvalConfig, context_frames: int, n_actions: int) -> tuple[RealRollouts, dict[str, np.ndarray]]:
    """The real rollouts of every scenario stacked row-wise ("policy" first), and each scenario's row indices."""
    parts, rows, offset = [], {}, 0
    for scenario in ["policy", *cfg.adversarial]:
        starts = cfg.starts if scenario == "policy" else cfg.adversarial_starts
        part = real_rollouts(scenario, list(cfg.seeds), starts, context_frames, n_actions, max(cfg.horizons),
                             cfg.chase_prob, cfg.policy, cfg.min_repeat, cfg.max_repeat, cfg.lethal)
        rows[scenario] = np.arange(offset, offset + len(part.seeds))
        parts.append(part)
        offset += len(part.seeds)
    return concat_rows(parts), rows


def by_scenario(rollout: Rollout, real: RealRollouts, rows: dict[str, np.ndarray], horizons: list[int]
                ) -> dict[str, dict[str, dict]]:
    """{"results" | "rules" | "controllability": {scenario: table}} of one model."""
    out: dict[str, dict] = {"results": {}, "rules": {}, "controllability": {}}
    for scenario, idx in rows.items():
        part = take_rows(real, idx)
        frame = summarise(take_rows(rollout.frame, idx), part, horizons)
        rules = summarise_rules(take_rows(rollout.rules, idx), part, horizons)
        out["results"][scenario] = frame
        out["rules"][scenario] = {h: rules[h] | {k: frame[h][k] for k in SHARED} for h in horizons}
        if rollout.control_psnr is not None:
            out["controllability"][scenario] = controllability(rollout.frame.psnr[idx], rollout.control_psnr[idx], part)
    return out


def inspect_models(cfg: EvalConfig, names: list[str]) -> tuple[dict[str, int], dict[str, dict], int]:
    """Per checkpoint path its context length; per model name how it samples (printed); the action count."""
    cores = {p: DreamCore(p, 1, cfg.device, cfg.dtype, denoise_steps=cfg.denoise_steps) for p in cfg.checkpoints}
    contexts = {p: core.model.start_frames.shape[1] for p, core in cores.items()}
    sampling = {name: sampling_of(cores[p]) for name, p in zip(names, cfg.checkpoints)}
    for name, how in sampling.items():
        print(f"[eval] {name} samples with {how['steps']} denoising steps, sigmas {how['sigmas']} "
              f"(checkpoint sampler: {how['checkpoint']})", flush=True)
    return contexts, sampling, cores[cfg.checkpoints[0]].n_actions


def write_report(report: dict, videos: dict[str, np.ndarray], cfg: EvalConfig) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report, cfg)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg)} | report, indent=1))
    plot_rules(report["rules"]["horizons"], cfg.horizons, out)
    plot_horizons(report["results"], cfg.horizons, out)
    write_videos(videos, out, cfg.video_frames, cfg.video_scale)
    print(text)
    print(f"[eval] wrote {out}/results.md, results.json, rules_vs_horizon_*.png, error_vs_horizon_*.png, videos/")


def main(cfg: EvalConfig) -> dict:
    """Run the evaluation; returns {"sampling": {model: ...}, "rules": {"horizons" | "controllability": {scenario:
    {model: {horizon: {metric: {mean, std, n}}}}}}, "results": {scenario: {model: {horizon: {metric: ...}}}}}."""
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    reader = make_reader(cfg.probe)
    names = list(cfg.names) or [model_name(p) for p in cfg.checkpoints]
    contexts, sampling, n_actions = inspect_models(cfg, names)
    reals = {k: all_scenarios(cfg, k, n_actions) for k in sorted(set(contexts.values()))}
    real, rows = reals[contexts[cfg.checkpoints[0]]]
    keep = min(cfg.videos, cfg.starts)
    per_model = {name: by_scenario(rollout, real, rows, cfg.horizons)
                 for name, rollout in baselines(real, reader, cfg, n_actions).items()}
    videos = {REAL: real.frames[:keep]} if keep else {}
    for name, path in zip(names, cfg.checkpoints):
        real, rows = reals[contexts[path]]
        rollout = model_rollout(name, path, real, cfg, reader, keep, sampling[name], n_actions)
        per_model[name] = by_scenario(rollout, real, rows, cfg.horizons)
        if keep:
            videos[name] = rollout.video
    tables = {part: {scenario: {name: summary[part][scenario] for name, summary in per_model.items()
                                if scenario in summary[part]} for scenario in rows}
              for part in ("results", "rules", "controllability")}
    rules = {"horizons": tables["rules"], "controllability": tables["controllability"]}
    report = {"sampling": sampling, "rules": rules, "results": tables["results"]}
    write_report(report, videos, cfg)
    return report

