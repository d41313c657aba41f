"""Real-game and model rollouts from the same real starts under the same actions, scored frame by frame.

A *scenario* says where the actions after the context come from: "policy" (the recording's
random-with-persistence policy, or the coin seeker) or the adversarial scripts "hold" (one key for
the whole horizon), "alternate" (two opposite keys swapped every frame) and "noop". For each seed,
`real_rollouts` plays the real CoinChase: a real context (random play, as recorded) that primes the
models, then `horizon` scripted actions; the game's `info` gives the ground truth (player cell,
score, reward, termination). `dream_frames` drives a checkpoint through `envs.dream.DreamCore` — the
env's own rollout — and `score_rollout` turns every generated frame into per-row metrics, streaming, so
a 1,000-frame horizon never holds the model's frames in memory (other per-frame checks, such as
train.eval.rules' rules check, ride along as `taps` on the same stream). Game state is read from
frames by a `Reader`; the default is the deterministic `envs.coinchase_reader`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import ClassVar, TypeVar

import numpy as np

from envs.coinchase import PALETTE, SCORE_DIGITS, CoinChaseEnv
from envs.coinchase_reader import read_player_and_score, read_state
from envs.dream import DreamCore
from envs.policies import RandomPersistentPolicy, make_policy
from worldmodel.metrics import palette_artifact_rate, psnr, ssim

SCENARIOS = ("policy", "hold", "alternate", "noop")
NOOP, UP, DOWN, LEFT, RIGHT = range(5)
MISSING_PLAYER = 8.0    # position error charged when no player is drawn (the grid's largest L1 distance is 12)
PSNR_CAP = 60.0         # identical frames (PSNR inf) count as 60 dB in means
EVENT = 0.5             # a predicted reward / termination probability above this is an event
Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]   # frames -> player (N, 2), score (N,) or None
# per frame: frames (S, H, W, 3), rewards (S,), terms (S,)
Stream = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]
Tap = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]  # (frame index h, frames, rewards, terms)
DEFAULT_READER: Reader = read_player_and_score


class ScriptedActions:
    """The adversarial action scripts; `row` picks the key (hold) or the key pair (alternate)."""

    def __init__(self, scenario: str, row: int):
        if scenario not in SCENARIOS[1:]:
            raise ValueError(f"scripted scenarios are {SCENARIOS[1:]}, got {scenario!r}")
        self.scenario, self.row, self.t = scenario, row, 0

    def reset(self, rng: np.random.Generator) -> None:
        self.t = 0

    def __call__(self, obs: np.ndarray, info: dict) -> int:
        t, self.t = self.t, self.t + 1
        if self.scenario == "hold":
            return (UP, DOWN, LEFT, RIGHT)[self.row % 4]
        if self.scenario == "alternate":
            pair = (LEFT, RIGHT) if self.row % 2 == 0 else (UP, DOWN)
            return pair[t % 2]
        return NOOP


@dataclass
class RealRollouts:
    seeds: np.ndarray            # (S,) the eval seed each row belongs to
    context: np.ndarray          # (S, K, H, W, 3) uint8 frames that prime the models
    context_actions: np.ndarray  # (S, K) int64 (null id first)
    start_scores: np.ndarray     # (S,) score at the last context frame
    actions: np.ndarray          # (S, Hmax) int64 actions after the context
    frames: np.ndarray           # (S, Hmax, H, W, 3) uint8 real frame after each action
    players: np.ndarray          # (S, Hmax, 2) int64 real player cell after each action
    coins: np.ndarray            # (S, Hmax, 2) int64 real coin cell after each action
    enemies: np.ndarray          # (S, Hmax, 2) int64 real enemy cell after each action
    scores: np.ndarray           # (S, Hmax) int64 real score after each action
    rewards: np.ndarray          # (S, Hmax) float real reward of each action
    terminated: np.ndarray       # (S, Hmax) bool the player was caught at this frame (the episode ended, if lethal)
    alive: np.ndarray            # (S, Hmax) bool the real episode had not ended before this frame

    PER_FRAME: ClassVar[tuple[str, ...]] = ("actions", "frames", "players", "coins", "enemies", "scores", "rewards",
                                            "terminated", "alive")

    def head(self, frames: int) -> RealRollouts:
        """The same rows, cut after their first `frames` frames past the context."""
        return replace(self, **{k: getattr(self, k)[:, :frames] for k in self.PER_FRAME})


def play_context(env: CoinChaseEnv, policy: RandomPersistentPolicy, rng: np.random.Generator, frames: int,
                 n_actions: int, seed: int):
    """Reset with `seed` and play `frames` - 1 random steps; None if the episode ends inside the context."""
    obs, info = env.reset(seed=seed)
    policy.reset(rng)
    observed, actions = [obs], [n_actions]
    for _ in range(frames - 1):
        action = policy(obs, info)
        obs, _, terminated, _, info = env.step(action)
        if terminated or env.caught:
            return None
        observed.append(obs), actions.append(action)
    return observed, actions, obs, info


def real_rollouts(scenario: str, seeds: list[int], starts: int, context_frames: int, n_actions: int, horizon: int,
                  chase_prob: float = 0.5, policy: str = "random", min_repeat: int = 1, max_repeat: int = 6,
                  lethal: bool = True) -> RealRollouts:
    """`starts` real rollouts per seed (rows seed-major); the same arguments give the same rollouts.

    lethal=False: being caught does not end the real episode (every row stays alive to `horizon`);
    `terminated` then marks the frames where the player was caught, the events a model's
    termination head should predict. Contexts never contain a catch."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    env = CoinChaseEnv(horizon=context_frames + horizon + 1, chase_prob=chase_prob, lethal=lethal)
    rows: list[dict[str, np.ndarray]] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        context_policy = RandomPersistentPolicy(n_actions, min_repeat, max_repeat, rng)
        for start in range(starts):
            episode_seed = seed * 100_003 + start
            while (context := play_context(env, context_policy, rng, context_frames, n_actions, episode_seed)) is None:
                episode_seed += 7_919             # the enemy caught the player inside the context: another start
            actor = _actor(scenario, policy, start, n_actions, min_repeat, max_repeat, rng)
            rows.append(_play_on(env, context, actor, horizon, rng) | {"seeds": np.int64(seed)})
    return RealRollouts(**{k: np.stack([row[k] for row in rows]) for k in rows[0]})


def _actor(scenario: str, policy: str, row: int, n_actions: int, min_repeat: int, max_repeat: int, rng):
    if scenario != "policy":
        return ScriptedActions(scenario, row)
    return make_policy(policy, n_actions, rng, min_repeat=min_repeat, max_repeat=max_repeat)


def _play_on(env: CoinChaseEnv, context, actor, horizon: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frames, context_actions, obs, info = context
    actor.reset(rng)
    out = {"context": np.stack(frames), "context_actions": np.asarray(context_actions, np.int64),
           "start_scores": np.int64(info["score"])}
    alive = True
    keys = RealRollouts.PER_FRAME
    series: dict[str, list] = {k: [] for k in keys}
    reward, terminated = 0.0, False
    for _ in range(horizon):
        action = actor(obs, info)
        series["alive"].append(alive)
        if alive:
            obs, reward, terminated, truncated, info = env.step(action)
            alive = not (terminated or truncated)
            terminated = env.caught
        else:
            reward, terminated = 0.0, False
        values = (action, obs, info["player"], info["coin"], info["enemy"], info["score"], reward, terminated)
        for key, value in zip(keys[:-1], values, strict=True):
            series[key].append(value)
    return out | {k: np.asarray(v) for k, v in series.items()}


def dream_frames(checkpoint: str, real: RealRollouts, device: str = "cpu", denoise_steps: int = 0,
                 dtype: str = "float32") -> Stream:
    """Yield the model's (frames (S, H, W, 3) uint8, rewards (S,), termination probs (S,)) after each real action.

    denoise_steps 0: the checkpoint's own sampler.steps; dtype: the DiT's (envs.dream.pick_dtype)."""
    rows = len(real.actions)
    core = DreamCore(checkpoint, rows, device, dtype, denoise_steps=denoise_steps)
    core.reset_rows(np.arange(rows), [int(real.seeds[i]) * 1_000 + i for i in range(rows)],
                    real.context, real.context_actions)
    for h in range(real.actions.shape[1]):
        step = core.step(real.actions[:, h])
        yield step.frames, step.rewards, step.terminations


def copy_last_frames(real: RealRollouts) -> Stream:
    """The copy-last-frame baseline: the last context frame forever, no reward, no termination."""
    zeros = np.zeros(len(real.actions))
    for _ in range(real.actions.shape[1]):
        yield real.context[:, -1], zeros, zeros


def real_frames(real: RealRollouts) -> Stream:
    """The real game itself (a check of the metrics: position error = the reader's error on real frames)."""
    for h in range(real.actions.shape[1]):
        yield real.frames[:, h], real.rewards[:, h], real.terminated[:, h].astype(np.float64)


def player_cells(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 2) (row, col) of the player's cell, (-1, -1) if none (envs.coinchase_reader)."""
    return read_state(frames).player


def position_error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """L1 cell distance between read cells got (N, 2) (-1 = no player) and true cells want (N, 2). (N,)"""
    error = np.abs(got - want).sum(1).astype(np.float64)
    error[(got < 0).any(1)] = MISSING_PLAYER
    return error


def score_violations(scores: np.ndarray, previous: np.ndarray, reward_now: np.ndarray, reward_before: np.ndarray
                     ) -> np.ndarray:
    """A score step is consistent if it stays, or rises by one with a (predicted) reward this or the last frame.

    scores, previous (N,) int read scores (-1: unreadable, itself a violation; a step from an unreadable score is
    not judged); reward_* (N,) bool events. Scores are modulo 10**SCORE_DIGITS."""
    delta = (scores - previous) % 10 ** SCORE_DIGITS
    judged = (scores >= 0) & (previous >= 0)
    return (scores < 0) | (judged & ((delta > 1) | ((delta == 1) & ~(reward_now | reward_before))))


@dataclass
class FrameScores:
    """Per-row, per-frame metrics of one rollout (all (S, Hmax))."""
    psnr: np.ndarray
    ssim: np.ndarray
    pos_err: np.ndarray
    artifact: np.ndarray
    score_violation: np.ndarray   # bool; False where the reader reads no score
    reward: np.ndarray            # predicted reward
    termination: np.ndarray       # predicted termination probability


def score_rollout(stream: Stream, real: RealRollouts, reader: Reader = DEFAULT_READER, keep_rows: int = 0,
                  taps: tuple[Tap, ...] = ()) -> tuple[FrameScores, np.ndarray]:
    """Score every frame of `stream` against `real`; also returns the first `keep_rows` rows' frames (k, Hmax, H, W, 3).

    Each tap is called with every frame batch too (one pass over a rollout that is never stored)."""
    s, horizon = real.actions.shape
    columns: dict[str, list[np.ndarray]] = {k: [] for k in FrameScores.__dataclass_fields__}
    kept = []
    previous_score = real.start_scores % 10 ** SCORE_DIGITS
    reward_before = np.zeros(s, bool)
    for h, (frames, rewards, terminations) in enumerate(stream):
        cells, scores = reader(frames)
        reference = real.frames[:, h]
        reward_now = rewards > EVENT
        if scores is None:
            violation = np.zeros(s, bool)
        else:
            violation = score_violations(scores, previous_score, reward_now, reward_before)
            previous_score = scores
        reward_before = reward_now
        for key, value in (("psnr", np.minimum(psnr(frames, reference), PSNR_CAP)), ("ssim", ssim(frames, reference)),
                           ("pos_err", position_error(cells, real.players[:, h])),
                           ("artifact", palette_artifact_rate(frames, PALETTE)), ("score_violation", violation),
                           ("reward", rewards), ("termination", terminations)):
            columns[key].append(np.asarray(value))
        for tap in taps:
            tap(h, frames, rewards, terminations)
        if keep_rows:
            kept.append(frames[:keep_rows])
    if len(columns["psnr"]) != horizon:
        raise RuntimeError(f"the rollout stream gave {len(columns['psnr'])} frames, expected {horizon}")
    video = np.stack(kept, 1) if keep_rows else np.zeros((0,), np.uint8)
    return FrameScores(**{k: np.stack(v, 1) for k, v in columns.items()}), video


T = TypeVar("T")


def take_rows(table: T, rows: np.ndarray) -> T:
    """The given rows of a dataclass of per-row arrays (RealRollouts, FrameScores, ...), without copying the rest."""
    return replace(table, **{f.name: getattr(table, f.name)[rows] for f in fields(table)})


def concat_rows(tables: list[T]) -> T:
    """Dataclasses of per-row arrays (of one type) stacked row-wise."""
    return replace(tables[0], **{f.name: np.concatenate([getattr(t, f.name) for t in tables])
                                 for f in fields(tables[0])})


def over_seeds(values: np.ndarray, mask: np.ndarray, seeds: np.ndarray) -> dict:
    """Mean over seeds of each seed's mean of `values` (S,) on its rows in `mask` (S,); std across seeds; n rows."""
    means = [values[(seeds == s) & mask].mean() for s in np.unique(seeds) if ((seeds == s) & mask).any()]
    if not means:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(means)), "std": float(np.std(means)), "n": int(mask.sum())}
