"""`python -m train.eval.codes`: do a latent cache's learned codes (train.stages.codes) mark the real game's random
events?

Reads the recording the cache was encoded from (its `infos`, the real state per frame) and the codes of each frame;
the game's evaluation spec (envs.game_spec) says at which steps a random event happened. Reports, per split, each
random event's share of steps that carry a code (recall) and of the steps right after one (where an event's
random speed or direction first shows), the share of coded steps at which some random event happened (the rest
mark randomness the spec does not name, or nothing), and how often each slot is coded. For
evaluation only: the codes stage never reads the real state.

    python -m train.eval.codes autoencoder_dir=runs/catch/autoencoder dataset_id=catch/random-v0 \\
        env_id=dreamgym/Catch-v0
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.game_spec import NOT_HAPPENED, GameSpec, spec_for
from train.common.cli import hydra_main
from train.common.latents import load_latents
from worldmodel.data import Episode, load_episodes, split_by_episode


@dataclass
class CodesEvalConfig:
    autoencoder_dir: str = "runs/catch/autoencoder"   # its latents/ hold the cache and the codes
    dataset_id: str = "catch/random-v0"               # the recording the cache was encoded from
    data_root: str = "data/minari"
    env_id: str = "dreamgym/Catch-v0"                 # whose evaluation spec names the random events
    val_fraction: float = 0.1                         # the autoencoder stage's split of the recording
    split_seed: int = 0
    out: str = ""                                     # write report.json here ("" = print only)


def step_events(spec: GameSpec, episode: Episode) -> dict[str, np.ndarray]:
    """Per step (n,) bool: which of the spec's random events happened, read from the recorded real states."""
    infos = [{k: v[i] for k, v in episode.infos.items()} for i in range(len(episode))]
    states = spec.real_states(infos)
    before = {k: v[:-1] for k, v in states.items()}
    after = {k: v[1:] for k, v in states.items()}
    return {name: where != NOT_HAPPENED for name, where in spec.random(before, after).items()}


def agreement(spec: GameSpec, recorded: list[Episode], cached: list[Episode]) -> dict[str, Any]:
    """Recall per random event, precision of the codes, coded share per slot, over matching episodes."""
    k = cached[0].frames.shape[-1] ** 2
    codes = np.concatenate([e.infos["event_cells"][1:] for e in cached])                    # (N, E) per step
    events = [step_events(spec, e) for e in recorded]
    happened = {name: np.concatenate([e[name] for e in events]) for name in events[0]}
    after = {name: np.concatenate([np.r_[False, e[name][:-1]] & ~e[name] for e in events]) for name in events[0]}
    coded = (codes < k).any(1)
    any_event = np.logical_or.reduce(list(happened.values()))

    def recall(masks: dict[str, np.ndarray]) -> dict[str, float | None]:
        return {name: float(coded[mask].mean()) if mask.any() else None for name, mask in masks.items()}

    return {"steps": len(codes), "recall": recall(happened), "recall_next_step": recall(after),
            "event_rate": {name: float(mask.mean()) for name, mask in happened.items()},
            "coded_with_event": float(any_event[coded].mean()) if coded.any() else None,
            "coded_per_slot": [float(c) for c in (codes < k).mean(0)]}


def main(cfg: CodesEvalConfig) -> dict[str, Any]:
    spec = spec_for(cfg.env_id)
    latents = load_latents(Path(cfg.autoencoder_dir) / "latents")
    if not latents.event_entities:
        raise ValueError(f"{cfg.autoencoder_dir}/latents has no codes: run python -m train.stages.codes first")
    recorded, _ = load_episodes(cfg.dataset_id, cfg.data_root)
    report = {}
    for split, (real, cached) in zip(("train", "val"), zip(split_by_episode(recorded, cfg.val_fraction,
                                                                            cfg.split_seed),
                                                           (latents.train, latents.val), strict=True), strict=True):
        if [len(e) for e in real] != [len(e) for e in cached]:
            raise ValueError(f"the {split} episodes of {cfg.dataset_id} are not the cache's: set val_fraction and "
                             "split_seed as the autoencoder stage had them")
        if cached:
            report[split] = agreement(spec, real, cached)
    print(json.dumps(report, indent=2))
    if cfg.out:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "report.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    hydra_main("eval_codes", CodesEvalConfig, main)
