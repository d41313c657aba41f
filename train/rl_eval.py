"""Judging a policy in the real game: seeded episodes of any game, played together, their returns and lengths.

Owns what train.rl's evaluations and baselines share. `evaluate(act, env_id, frame_size, ...)` plays `episodes`
seeded real episodes of the Gymnasium id `env_id` (envs.sb3.make_game: frames resized to the dream's frame size,
so a policy trained in the dream sees what it saw there) under an `Actor` and returns real_return_mean /
real_return_std (sum of rewards per episode; std over episodes), real_len_mean and, for a game whose info reports
a `score` (dreamgym's games do), real_score_mean / real_score_std (that score at episode end).
Actors: `ppo_actor` (an SB3 model) and `policy_actor` (envs.policies: "random" holds each uniformly random action
for a few steps, any game; a game's own scripted players as envs.policies.baseline_policies names them).

    from train.rl_eval import evaluate, policy_actor
    act = policy_actor("random", 3, episodes=20, seed=0)
    print(evaluate(act, "dreamgym/Catch-v0", 64, episodes=20, eval_seed=12345, seed=0, horizon=1000))
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from envs.policies import make_policy
from envs.sb3 import make_game

# act(obs (E, S, S, 3) uint8, infos of those E envs, their episode ids (E,)) -> actions (E,)
Actor = Callable[[np.ndarray, list[dict[str, Any]], np.ndarray], np.ndarray]


def episode_seed(eval_seed: int, seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([eval_seed, seed, episode]).generate_state(1)[0])


def evaluate(act: Actor, env_id: str, frame_size: int, episodes: int, eval_seed: int, seed: int,
             horizon: int) -> dict[str, Any]:
    """Play `episodes` seeded real episodes of `env_id` together under `act` (`horizon` steps at most each):
    return, length and (where the game's info has one) score stats."""
    games = [make_game(env_id, frame_size, horizon) for _ in range(episodes)]
    try:
        started = [game.reset(seed=episode_seed(eval_seed, seed, i)) for i, game in enumerate(games)]
        obs = np.stack([o for o, _ in started])                # (E, S, S, 3) uint8
        infos = [info for _, info in started]
        returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
        alive = np.ones(episodes, bool)
        while alive.any():
            rows = np.flatnonzero(alive)
            actions = act(obs[rows], [infos[i] for i in rows], rows)
            for i, action in zip(rows, actions, strict=True):
                obs[i], reward, terminated, truncated, infos[i] = games[i].step(int(action))
                returns[i] += float(reward)
                lengths[i] += 1
                alive[i] = not (terminated or truncated)
    finally:
        for game in games:
            game.close()
    stats: dict[str, Any] = {"real_return_mean": float(returns.mean()), "real_return_std": float(returns.std()),
                             "real_len_mean": float(lengths.mean())}
    if all("score" in info for info in infos):
        scores = np.array([float(info["score"]) for info in infos])
        stats.update(real_score_mean=float(scores.mean()), real_score_std=float(scores.std()))
    return {**stats, "episodes": episodes}


def game_actions(env_id: str, frame_size: int = 64) -> int:
    """The action count of the real game `env_id` (its Discrete action space)."""
    game = make_game(env_id, frame_size)
    try:
        return int(game.action_space.n)
    finally:
        game.close()


def policy_actor(name: str, n_actions: int, episodes: int, seed: int, epsilon: float = 0.0, min_repeat: int = 1,
                 max_repeat: int = 8) -> Actor:
    """A scripted policy per episode (envs.policies: random = uniform actions, each held for [min_repeat,
    max_repeat] steps; a game's own player, e.g. the coin seeker, takes a random legal move with chance
    `epsilon`), seeded (seed, i)."""
    policies = []
    for i in range(episodes):
        policy = make_policy(name, n_actions, np.random.default_rng([seed, i]), epsilon=epsilon,
                             min_repeat=min_repeat, max_repeat=max_repeat)
        policy.reset(np.random.default_rng([seed, i]))
        policies.append(policy)
    return lambda obs, infos, rows: np.array([policies[r](o, info)
                                              for o, info, r in zip(obs, infos, rows, strict=True)])


def ppo_actor(model: Any, deterministic: bool) -> Actor:
    """An SB3 model's actions (`model.predict`), argmax with `deterministic`, else sampled."""
    return lambda obs, infos, rows: model.predict(obs, deterministic=deterministic)[0]
