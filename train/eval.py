"""`python -m train.eval`: world models vs the real game, from the same real starts under the same actions.

For every checkpoint (plus the copy-last-frame baseline and the real game itself as a check of the
metrics) and every scenario (the "policy" rollouts and the adversarial "hold" / "alternate" /
"noop" scripts), rolls out `starts` real starts per seed and reports at each horizon: PSNR, SSIM,
player position error (the state probe on the generated frame vs the real game's player cell),
palette artifact rate, score-consistency violations (the probe's score falls, jumps, or rises
without a predicted reward) and reward / termination F1. Means are over seeds (each seed's mean
over its rows) with the spread (std) across seeds; n counts the rows. Writes results.md,
results.json, plots (error vs horizon) and side-by-side mp4s (real | models) to `out`.
A model's scores are cached under out/cache keyed by its weights and the config, so a killed or
extended evaluation resumes.

    python -m train.eval "checkpoints=[runs/coinchase/tf/checkpoint,runs/coinchase/self_forcing/checkpoint]"
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs.dream import DreamCore
from train.cli import hydra_main
from train.eval_report import markdown, plot_horizons, write_videos
from train.eval_rollouts import (EVENT, SCENARIOS, FrameScores, RealRollouts, colour_reader, copy_last_frames,
                                 dream_frames, real_frames, real_rollouts, score_rollout)

COPY_LAST, REAL = "copy-last-frame", "real game"


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
    denoise_steps: int = 4
    device: str = "cpu"
    threads: int = 0                  # torch threads; 0 keeps torch's default
    probe: str = "runs/coinchase/probe"   # state probe (train.probe); "" reads the player by colour, no score
    out: str = "runs/eval"
    videos: int = 2                   # "policy" starts written as side-by-side mp4s
    video_frames: int = 300
    video_scale: int = 3


def model_name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "checkpoint" else p.name


def summarise(scores: FrameScores, real: RealRollouts, horizons: list[int]) -> dict[int, dict[str, dict]]:
    """Per horizon h: each metric's mean and std over seeds and its n.

    PSNR, SSIM and position error are read at frame h over rows whose real episode is alive there;
    artifact rate at frame h over all rows (it needs no reference); score violations per frame over
    frames 1..h, all rows; reward / termination F1 pooled over the live frames 1..h (n = real events)."""
    table = {}
    for h in horizons:
        live, every = real.alive[:, h - 1], np.ones(len(real.seeds), bool)
        row = {key: _over_seeds(getattr(scores, key)[:, h - 1], mask, real.seeds)
               for key, mask in (("psnr", live), ("ssim", live), ("pos_err", live), ("artifact", every))}
        row["score_violation"] = _over_seeds(scores.score_violation[:, :h].mean(1), every, real.seeds)
        window = real.alive[:, :h]
        row["reward_f1"] = _f1(scores.reward[:, :h][window] > EVENT, real.rewards[:, :h][window] > EVENT)
        row["termination_f1"] = _f1(scores.termination[:, :h][window] > EVENT, real.terminated[:, :h][window])
        table[h] = row
    return table


def _over_seeds(values: np.ndarray, mask: np.ndarray, seeds: np.ndarray) -> dict:
    means = [values[(seeds == s) & mask].mean() for s in np.unique(seeds) if ((seeds == s) & mask).any()]
    if not means:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(means)), "std": float(np.std(means)), "n": int(mask.sum())}


def _f1(predicted: np.ndarray, true: np.ndarray) -> dict:
    tp, fp, fn = int((predicted & true).sum()), int((predicted & ~true).sum()), int((~predicted & true).sum())
    value = float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"mean": value, "std": 0.0, "n": int(true.sum())}


def _cache_key(path: str, cfg: EvalConfig) -> str:
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).glob("*.safetensors"))
    fields = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoints", "names", "out", "videos", "video_frames",
                                                                   "video_scale", "device", "threads")}
    blob = json.dumps([str(Path(path).resolve()), weights, fields], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _scores_of(name: str, path: str, real: RealRollouts, cfg: EvalConfig, reader, keep: int
               ) -> tuple[FrameScores, np.ndarray]:
    """One checkpoint on every row of every scenario (one batched rollout), cached under out/cache."""
    cache = Path(cfg.out) / "cache" / f"{name}-{_cache_key(path, cfg)}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            if keep == 0 or len(saved["video"]) >= keep:     # else: cached without the video rows asked for now
                return FrameScores(**{k: saved[k] for k in FrameScores.__dataclass_fields__}), saved["video"][:keep]
    print(f"[eval] {name}: {len(real.seeds)} rollouts x {real.actions.shape[1]} frames", flush=True)
    scores, video = score_rollout(dream_frames(path, real, cfg.device, cfg.denoise_steps), real, reader, keep)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npz")
    np.savez_compressed(partial, video=video, **asdict(scores))
    partial.replace(cache)
    return scores, video


def make_reader(probe: str):
    if not probe:
        return colour_reader
    from train.probe import load_probe

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
    stacked = RealRollouts(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in RealRollouts.__dataclass_fields__})
    return stacked, rows


def by_scenario(scores: FrameScores, real: RealRollouts, rows: dict[str, np.ndarray], horizons: list[int]) -> dict:
    return {scenario: summarise(FrameScores(**{k: v[idx] for k, v in asdict(scores).items()}),
                                RealRollouts(**{k: v[idx] for k, v in asdict(real).items()}), horizons)
            for scenario, idx in rows.items()}


def main(cfg: EvalConfig) -> dict:
    """Run the evaluation; returns {scenario: {model: {horizon: {metric: {mean, std, n}}}}}."""
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    reader = make_reader(cfg.probe)
    names = list(cfg.names) or [model_name(p) for p in cfg.checkpoints]
    cores = {p: DreamCore(p, 1, cfg.device) for p in cfg.checkpoints}
    contexts = {p: core.model.start_frames.shape[1] for p, core in cores.items()}
    n_actions = cores[cfg.checkpoints[0]].n_actions
    del cores
    reals = {k: all_scenarios(cfg, k, n_actions) for k in sorted(set(contexts.values()))}
    real, rows = reals[contexts[cfg.checkpoints[0]]]
    keep = min(cfg.videos, cfg.starts)
    per_model = {REAL: by_scenario(score_rollout(real_frames(real), real, reader)[0], real, rows, cfg.horizons),
                 COPY_LAST: by_scenario(score_rollout(copy_last_frames(real), real, reader)[0], real, rows, cfg.horizons)}
    videos = {REAL: real.frames[:keep]} if keep else {}
    for name, path in zip(names, cfg.checkpoints):
        real, rows = reals[contexts[path]]
        scores, video = _scores_of(name, path, real, cfg, reader, keep)
        per_model[name] = by_scenario(scores, real, rows, cfg.horizons)
        if keep:
            videos[name] = video
    results = {scenario: {name: tables[scenario] for name, tables in per_model.items()} for scenario in rows}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(results, cfg)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "results": results}, indent=1))
    plot_horizons(results, cfg.horizons, out)
    write_videos(videos, out, cfg.video_frames, cfg.video_scale)
    print(report)
    print(f"[eval] wrote {out}/results.md, results.json, error_vs_horizon_*.png, videos/")
    return results


if __name__ == "__main__":
    hydra_main("eval", EvalConfig, main)
