"""`python -m train.eval.events`: the event model's next-cell distributions against the game's exact ones.

On held-out real CoinChase play (seeds the recording never used, the recording's mixed policy), each
transition's previous frame is encoded and the checkpoint's event model gives, per random entity
(enemy, coin), a distribution over cells; the game gives the exact one
(`CoinChaseEnv.next_cell_probabilities`). Reported per entity: total variation distance (mean, and
the 99th percentile over transitions), the mass on cells the game can never reach, and the same two
after the sampler's `event_min_prob` floor (what a rollout actually draws from). Coin respawns (the
player reaches the coin) are reported apart: rare, and the only transitions where the coin is random.
So are frames with the enemy on the player (`lethal=False` play goes on after a catch; the recording,
where a catch ends the episode, never continues from one).

    python -m train.eval.events checkpoint=runs/ev/self_forcing/checkpoint
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

import worldmodel
from envs.coinchase import CELLS, CoinChaseEnv
from envs.policies import make_policy

ENTITIES = ("enemy", "coin")


@dataclass
class EventsEvalConfig:
    checkpoint: str = ""              # a checkpoint with entity events; "" = the bundled one
    seeds: list[int] = field(default_factory=lambda: [101, 102, 103])
    steps: int = 400                  # transitions per seed
    chase_prob: float = 0.5           # the game's default (the recording's)


def play(cfg: EventsEvalConfig, n_actions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames before each transition (N, H, W, 3), its action (N,), the exact enemy / coin distributions (N, 2, K),
    whether the coin respawns (N,) and whether the frame shows the enemy on the player (N,): a state the
    recording never has as a previous frame (a catch ends a recorded episode)."""
    frames, actions, exact, respawn, caught = [], [], [], [], []
    for seed in cfg.seeds:
        env = CoinChaseEnv(chase_prob=cfg.chase_prob, lethal=False)
        rng = np.random.default_rng(seed)
        policy = make_policy("mixed", n_actions, rng)
        obs, info = env.reset(seed=seed)
        for _ in range(cfg.steps):
            action = int(policy(obs, info))
            dists = env.next_cell_probabilities(action)                                 # (enemy, coin)
            table = np.zeros((2, CELLS * CELLS))
            for row, dist in enumerate(dists):
                for (r, c), p in dist.items():
                    table[row, r * CELLS + c] = p
            frames.append(obs)
            actions.append(action)
            exact.append(table)
            respawn.append(len(dists[1]) > 1)
            caught.append(env.enemy == env.player)
            obs, _, _, _, info = env.step(action)
    return np.stack(frames), np.array(actions), np.stack(exact), np.array(respawn), np.array(caught)


def floored(probs: np.ndarray, min_prob: float) -> np.ndarray:
    """What `worldmodel.events.sample_cells` draws from: cells below min_prob removed (the likeliest kept),
    renormalised."""
    keep = (probs >= min_prob) | (probs == probs.max(-1, keepdims=True))
    kept = probs * keep
    return kept / kept.sum(-1, keepdims=True)


@torch.no_grad()
def main(cfg: EventsEvalConfig) -> dict:
    model = worldmodel.load(cfg.checkpoint or None)
    dit = model.dit.eval()
    if dit.event_model is None:
        raise ValueError(f"{cfg.checkpoint or 'the bundled checkpoint'} has no entity events (event_channels = 0)")
    frames, actions, exact, respawn, caught = play(cfg, dit.config.n_actions)
    latents = model.autoencoder.encode(torch.from_numpy(frames)).float()
    probs = torch.softmax(dit.event_model(latents, torch.from_numpy(actions)), -1).numpy()       # (N, 2, K)
    result: dict = {"checkpoint": cfg.checkpoint or "bundled", "transitions": len(actions),
                    "coin_respawns": int(respawn.sum()), "enemy_on_player": int(caught.sum()),
                    "min_prob": model.config.sampler.event_min_prob}
    for name, p in (("raw", probs), ("sampled", floored(probs, model.config.sampler.event_min_prob))):
        tv = 0.5 * np.abs(p - exact).sum(-1)                                                      # (N, 2)
        unreachable = (p * (exact == 0)).sum(-1)
        for i, entity in enumerate(ENTITIES):
            rows = ({"apart": ~caught, "on_player": caught} if entity == "enemy"
                    else {"still": ~respawn & ~caught, "respawn": respawn & ~caught})
            for part, sel in rows.items():
                if sel.any():
                    key = f"{entity}_{part}_{name}"
                    result[key] = {"tv_mean": float(tv[sel, i].mean()), "tv_p99": float(np.quantile(tv[sel, i], 0.99)),
                                   "unreachable_mass": float(unreachable[sel, i].mean())}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from train.common.cli import hydra_main

    hydra_main("events_eval", EventsEvalConfig, main)
