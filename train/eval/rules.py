"""The rules check: does a generated CoinChase rollout obey the game's rules, frame by frame?

Owns judging frames (read by the deterministic `envs.coinchase_reader`) against the real game and
against CoinChase's rules, its per-horizon summary, and Genie's controllability ΔPSNR (Bruce et al.
2024): PSNR of a dream under the real actions minus PSNR of the same dream (same start, same noise)
under uniformly random actions, both against the real frames. A frame *violates the rules* if the
player is not on the real game's cell, it does not show exactly one player, one coin and one enemy,
the walls are not the game's walls, an entity sits in a wall (or in the score bar), the enemy moved
more than one cell, or the score broke its rule (it rises by one exactly when the player reaches
the coin, and stays otherwise; an unreadable score is a violation). The real game passes every rule.
`RulesCheck` is a tap of `train.eval.rollouts.score_rollout`, so it rides on the rollout's one pass.

It also scores the model's reward and termination outputs against the events of the dream itself
(the dreamed player enters the previous dreamed frame's coin cell; the dreamed enemy is on, or swaps
with, the dreamed player): the coin respawns and the enemy moves at random, so after the first
respawn a dream and the real game under the same keys have different events, and F1 against the
real game's (the frame-metric columns) measures mostly that.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from envs.coinchase import SCORE_DIGITS
from envs.coinchase_reader import GameState, read_state
from train.eval.rollouts import EVENT, PSNR_CAP, RealRollouts, Stream, over_seeds, position_error
from worldmodel.metrics import psnr

AT_FRAME = ("player_exact", "player_err")     # read at frame h, over the rows alive there
RATES = ("violation", "player_wrong", "entity_count", "walls_broken", "in_wall", "enemy_jump", "score_broken")
DREAM_EVENTS = {"reward_f1_dream": ("reward_said", "reward_seen"),            # F1 of the model's outputs against the
                "termination_f1_dream": ("termination_said", "termination_seen")}   # dream's own events
CONTROL_HORIZONS = (4, 16)                    # frames at which the controllability ΔPSNR is read
CONTROL_SEED = 0                              # seeds the random actions of the controllability rollout


@dataclass
class RuleScores:
    """Per-row, per-frame rule columns of one rollout, all (S, Hmax); the bool columns are True where a rule broke."""
    player_exact: np.ndarray    # bool the read player cell is the real game's
    player_err: np.ndarray      # float L1 cells to the real player (MISSING_PLAYER when none is read)
    entity_count: np.ndarray    # bool not exactly one player, one coin and one enemy
    walls_broken: np.ndarray    # bool a wall missing or a wall where the maze has none
    in_wall: np.ndarray         # bool an entity inside a wall cell or the score bar
    enemy_jump: np.ndarray      # bool the enemy moved more than one cell per frame since it was last seen
    score_broken: np.ndarray    # bool the score changed other than +1 on reaching the coin, or is unreadable
    reward_said: np.ndarray     # bool the model's reward output is an event (> EVENT)
    reward_seen: np.ndarray     # bool the dreamed player entered the previous dreamed frame's coin cell
    termination_said: np.ndarray  # bool the model's termination probability > EVENT
    termination_seen: np.ndarray  # bool the dreamed enemy is on the dreamed player, or they swapped cells

    @property
    def player_wrong(self) -> np.ndarray:
        return ~self.player_exact

    @property
    def violation(self) -> np.ndarray:
        """(S, Hmax) bool: any rule broken in the frame."""
        return (~self.player_exact | self.entity_count | self.walls_broken | self.in_wall | self.enemy_jump
                | self.score_broken)


@dataclass
class Carry:
    """What the next frame is judged against, per row: the previous frame's coin cell and score, and the
    enemy's last seen cell with the frames since (the enemy moves at most one cell per frame)."""
    coin: np.ndarray            # (S, 2) int64, -1 unseen
    score: np.ndarray           # (S,) int64, -1 unreadable
    enemy: np.ndarray           # (S, 2) int64, -1 never seen
    enemy_age: np.ndarray       # (S,) int64 frames since the enemy was seen
    player: np.ndarray          # (S, 2) int64 the previous frame's player cell, -1 unseen

    @classmethod
    def start(cls, state: GameState) -> Carry:
        """From the last context frame's state."""
        return cls(state.coin, state.score, state.enemy, np.ones(len(state.score), np.int64), state.player)


def _seen(cells: np.ndarray) -> np.ndarray:
    return (cells >= 0).all(1)


def enemy_jumps(state: GameState, before: Carry) -> np.ndarray:
    """(S,) bool: the enemy is further from its last seen cell than the frames elapsed allow."""
    distance = np.abs(state.enemy - before.enemy).sum(1)
    return _seen(state.enemy) & _seen(before.enemy) & (distance > before.enemy_age)


def score_broken(state: GameState, before: Carry) -> np.ndarray:
    """(S,) bool: the score is unreadable, or (from a readable score) it did not rise by exactly one on reaching
    the previous frame's coin cell, or did not stay otherwise (scores wrap modulo 10**SCORE_DIGITS)."""
    reached = reached_coin(state, before)
    delta = (state.score - before.score) % 10 ** SCORE_DIGITS
    judged = (state.score >= 0) & (before.score >= 0)
    return (state.score < 0) | (judged & (delta != reached.astype(np.int64)))


def reached_coin(state: GameState, before: Carry) -> np.ndarray:
    """(S,) bool: the player entered the previous frame's coin cell (a reward event)."""
    return _seen(state.player) & (state.player == before.coin).all(1)


def caught(state: GameState, before: Carry) -> np.ndarray:
    """(S,) bool: the enemy is on the player, or the two swapped cells (a termination event)."""
    both = _seen(state.player) & _seen(state.enemy)
    swapped = (state.enemy == before.player).all(1) & (state.player == before.enemy).all(1)
    return both & ((state.enemy == state.player).all(1) | swapped)


def judge(state: GameState, true_player: np.ndarray, before: Carry, rewards: np.ndarray | None = None,
          terminations: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], Carry]:
    """One frame's rule columns ({field of RuleScores: (S,)}) and the carry for the next frame.

    state: the frame's GameState (S rows); true_player (S, 2) the real game's player cell; rewards,
    terminations (S,): the model's outputs for the frame (None: no events said)."""
    quiet = np.zeros(len(state.score), bool)
    columns = {
               "reward_said": quiet if rewards is None else rewards > EVENT, "reward_seen": reached_coin(state, before),
               "termination_said": quiet if terminations is None else terminations > EVENT,
               "termination_seen": caught(state, before),"player_exact": (state.player == true_player).all(1),
               "player_err": position_error(state.player, true_player),
               "entity_count": ~state.one_of_each, "walls_broken": ~state.walls_intact, "in_wall": state.entity_in_wall,
               "enemy_jump": enemy_jumps(state, before), "score_broken": score_broken(state, before)}
    seen = _seen(state.enemy)
    after = Carry(state.coin, state.score, np.where(seen[:, None], state.enemy, before.enemy),
                  np.where(seen, 1, before.enemy_age + 1), state.player)
    return columns, after


class RulesCheck:
    """A `score_rollout` tap: judges each generated frame batch (S, H, W, 3) of a rollout from `real`'s starts."""

    def __init__(self, real: RealRollouts):
        self.real = real
        self.carry = Carry.start(read_state(real.context[:, -1]))
        self.columns: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(RuleScores)}

    def __call__(self, h: int, frames: np.ndarray, rewards: np.ndarray, terminations: np.ndarray) -> None:
        columns, self.carry = judge(read_state(frames), self.real.players[:, h], self.carry, rewards, terminations)
        for key, value in columns.items():
            self.columns[key].append(value)

    def scores(self) -> RuleScores:
        return RuleScores(**{k: np.stack(v, 1) for k, v in self.columns.items()})


def check_rules(stream: Stream, real: RealRollouts) -> RuleScores:
    """The rules check alone over a whole stream (score_rollout runs it as a tap alongside the other metrics)."""
    check = RulesCheck(real)
    for h, (frames, rewards, terminations) in enumerate(stream):
        check(h, frames, rewards, terminations)
    return check.scores()


def summarise_rules(rules: RuleScores, real: RealRollouts, horizons: list[int]) -> dict[int, dict[str, dict]]:
    """Per horizon h: AT_FRAME columns at frame h over the rows alive there (player_exact as a fraction);
    RATES per frame over each row's live frames 1..h, all rows. Each {mean, std over seeds, n rows}."""
    table = {}
    every = np.ones(len(real.seeds), bool)
    for h in horizons:
        live, window = real.alive[:, h - 1], real.alive[:, :h]
        row = {k: over_seeds(getattr(rules, k)[:, h - 1].astype(np.float64), live, real.seeds) for k in AT_FRAME}
        for k in RATES:
            rate = (getattr(rules, k)[:, :h] & window).sum(1) / window.sum(1)     # frame 1 is always live
            row[k] = over_seeds(rate, every, real.seeds)
        for k, (said, seen) in DREAM_EVENTS.items():
            row[k] = pooled_f1(getattr(rules, said)[:, :h][window], getattr(rules, seen)[:, :h][window])
        table[h] = row
    return table


def pooled_f1(predicted: np.ndarray, true: np.ndarray) -> dict:
    """F1 of bool predictions over pooled frames, as an over_seeds-like stat (std 0, n = true events)."""
    tp, fp, fn = int((predicted & true).sum()), int((predicted & ~true).sum()), int((~predicted & true).sum())
    value = float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"mean": value, "std": 0.0, "n": int(true.sum())}


def with_random_actions(real: RealRollouts, frames: int, n_actions: int, seed: int = CONTROL_SEED) -> RealRollouts:
    """`real`'s rows cut after `frames` frames, their actions replaced by uniformly random ones (seeded)."""
    head = real.head(frames)
    actions = np.random.default_rng(seed).integers(n_actions, size=head.actions.shape)      # (S, frames)
    return replace(head, actions=actions)


def stream_psnr(stream: Stream, real: RealRollouts) -> np.ndarray:
    """(S, T) PSNR of each streamed frame against the real frame at the same index (capped at PSNR_CAP)."""
    return np.stack([np.minimum(psnr(frames, real.frames[:, h]), PSNR_CAP)
                     for h, (frames, _, _) in enumerate(stream)], 1)


def controllability(psnr_real_actions: np.ndarray, psnr_random_actions: np.ndarray, real: RealRollouts
                    ) -> dict[int, dict]:
    """Genie's ΔPSNR at each CONTROL_HORIZONS frame h the random rollout reaches, over the rows alive at h.

    psnr_real_actions (S, >= T), psnr_random_actions (S, T): the same starts under the real and random actions."""
    reached = psnr_random_actions.shape[1]
    return {h: over_seeds(psnr_real_actions[:, h - 1] - psnr_random_actions[:, h - 1], real.alive[:, h - 1], real.seeds)
            for h in CONTROL_HORIZONS if h <= reached}
