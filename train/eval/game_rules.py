"""The generic rules check: judge dreamed rollouts of any game that has an evaluation spec (envs.game_spec).

Owns playing a real game into `GameRollouts` (frames, the spec's real states from `info`, actions,
rewards, terminations) and `check_game`, which reads the dream's frames back into state with the spec's
reader and measures, per horizon h (1, 32, 128, 1000 where the rollouts reach):
- deterministic parts exact at h: each `deterministic` field of the dream's frame h equals the real game's
  under the same actions, over the rows alive at h; `until_random` fields likewise over the rows whose
  real game had none of the field's random events in steps 1..h;
- well-formed fraction and violations per frame over steps 1..h (the spec's `malformed` checks of one
  frame and its transition rules between consecutive frames; frame 1's `before` is the real start frame);
- reward F1 and termination F1 of the model's outputs against the events the dream's own frames show;
and, over all live steps, random-event statistics dream vs real: each event's rate per step and the total
variation distance between the histograms of where it happened, with a noise floor (the expected distance
of two samples of the same sizes from the pooled histogram). Pure numpy; `markdown` writes the tables.
Shapes: S rows, H steps after the start frame; real frames and states hold the start frame at index 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the games' ids)
from envs.game_spec import NOT_HAPPENED, GameSpec, State
from envs.policies import Policy

HORIZONS = (1, 32, 128, 1000)
EVENT = 0.5               # a model's reward / termination output above this is an event
TV_NOISE_DRAWS = 200      # multinomial draws behind the TV noise floor
TV_NOISE_SEED = 0


@dataclass
class GameRollouts:
    """Real rollouts: S rows of a start frame and H steps; after an episode ends a row repeats its last frame."""
    frames: np.ndarray          # (S, H+1, 64, 64, 3) uint8 the start frame, then the frame after each action
    states: State               # {field: (S, H+1, ...)} the spec's real state of each frame
    actions: np.ndarray         # (S, H) int64
    rewards: np.ndarray         # (S, H) float64
    terminations: np.ndarray    # (S, H) bool
    alive: np.ndarray           # (S, H) bool the episode had not ended before this step


def play_real(spec: GameSpec | None, seeds: list[int], horizon: int, actions: np.ndarray | Policy,
              env_kwargs: dict[str, Any] | None = None, env: gym.Env | None = None) -> GameRollouts:
    """Play `spec.env_id` (or `env`, for a game without a spec: frames only, no states) from reset(seed) for each
    seed, `horizon` steps of `actions` (S, H) int or of a policy (`policy.reset(np.random.default_rng(seed))` per
    row, then `policy(obs, info)` per step)."""
    env = gym.make(spec.env_id, **(env_kwargs or {})).unwrapped if env is None else env
    rows = []
    for row, seed in enumerate(seeds):
        obs, info = env.reset(seed=seed)
        if not isinstance(actions, np.ndarray):
            actions.reset(np.random.default_rng(seed))
        frames, infos, acts, rewards, ends, alive = [obs], [info], [], [], [], []
        live = True
        for t in range(horizon):
            action = int(actions[row, t]) if isinstance(actions, np.ndarray) else int(actions(obs, info))
            acts.append(action)
            alive.append(live)
            if live:
                obs, reward, terminated, truncated, info = env.step(action)
                live = not (terminated or truncated)
            else:
                reward, terminated = 0.0, False
            frames.append(obs)
            infos.append(info)
            rewards.append(reward)
            ends.append(terminated)
        rows.append((np.stack(frames), spec.real_states(infos) if spec else {}, acts, rewards, ends, alive))
    env.close()
    return GameRollouts(frames=np.stack([r[0] for r in rows]),
                        states={k: np.stack([r[1][k] for r in rows]) for k in (spec.fields if spec else ())},
                        actions=np.array([r[2] for r in rows], np.int64).reshape(len(seeds), horizon),
                        rewards=np.array([r[3] for r in rows], np.float64).reshape(len(seeds), horizon),
                        terminations=np.array([r[4] for r in rows], bool).reshape(len(seeds), horizon),
                        alive=np.array([r[5] for r in rows], bool).reshape(len(seeds), horizon))


# ------------------------------------------------------------ per-step columns
def _flat(state: State, rows: int, steps: int, start: int = 0) -> State:
    """{k: (S, T, ...)} -> {k: (S*steps, ...)} of steps start .. start+steps-1."""
    return {k: v[:, start:start + steps].reshape(rows * steps, *v.shape[2:]) for k, v in state.items()}


def _unflat(columns: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    return {k: v.reshape(rows, -1) for k, v in columns.items()}


def transitions(spec: GameSpec, states: State, actions: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Over S rows of H+1 states {k: (S, H+1, ...)} and actions (S, H): the spec's per-step columns, each
    {name: (S, H)} under "violations", "events" and "random"."""
    rows, steps = actions.shape
    before, after = _flat(states, rows, steps, 0), _flat(states, rows, steps, 1)
    return {"violations": _unflat(spec.violations(before, after, actions.reshape(-1)), rows),
            "events": _unflat(spec.events(before, after), rows),
            "random": _unflat(spec.random(before, after), rows)}


def read_rollout(spec: GameSpec, start_frames: np.ndarray, frames: np.ndarray) -> State:
    """Start frames (S, 64, 64, 3) and frames (S, H, 64, 64, 3) -> read states {k: (S, H+1, ...)}."""
    rows, steps = frames.shape[:2]
    start = spec.read(start_frames)
    read = spec.read(frames.reshape(rows * steps, *frames.shape[2:]))
    return {k: np.concatenate([start[k][:, None], read[k].reshape(rows, steps, *read[k].shape[1:])], 1)
            for k in start}


# ------------------------------------------------------------ statistics
def f1(predicted: np.ndarray, true: np.ndarray) -> float:
    """F1 of pooled bool predictions; nan when neither side has an event."""
    tp, fp, fn = int((predicted & true).sum()), int((predicted & ~true).sum()), int((~predicted & true).sum())
    return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def tv_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance of two count histograms (normalised); nan if either is empty."""
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    return 0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum())


def tv_noise(a: np.ndarray, b: np.ndarray, draws: int = TV_NOISE_DRAWS, seed: int = TV_NOISE_SEED) -> float:
    """The mean TV distance of two samples of a.sum() and b.sum() draws from the pooled histogram of a and b."""
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    pooled = (a + b) / (a + b).sum()
    return float(np.mean([tv_distance(rng.multinomial(a.sum(), pooled), rng.multinomial(b.sum(), pooled))
                          for _ in range(draws)]))


@dataclass
class RandomEventStats:
    """One random event, dream vs real: rate per live step, and where it happened (TV over location bins)."""
    rate_real: float
    rate_dream: float
    tv: float                   # total variation distance of the location histograms (nan: no location / no event)
    tv_noise: float             # the same distance expected of two real samples of these sizes
    n_real: int                 # events seen
    n_dream: int
    steps_real: int             # live steps looked at
    steps_dream: int


def random_event_stats(spec: GameSpec, real: dict[str, np.ndarray], real_alive: np.ndarray,
                       dream: dict[str, np.ndarray], dream_alive: np.ndarray) -> dict[str, RandomEventStats]:
    """Per random event: `real` and `dream` {event: (S, H) location or NOT_HAPPENED}, over their live steps."""
    stats = {}
    for event, bins in spec.random_events.items():
        counts = []
        for locations, alive in ((real[event], real_alive), (dream[event], dream_alive)):
            happened = alive & (locations != NOT_HAPPENED)
            counts.append(np.bincount(locations[happened], minlength=bins))
        located = bins > 1
        stats[event] = RandomEventStats(
            rate_real=float(counts[0].sum() / max(real_alive.sum(), 1)),
            rate_dream=float(counts[1].sum() / max(dream_alive.sum(), 1)),
            tv=tv_distance(*counts) if located else float("nan"),
            tv_noise=tv_noise(*counts) if located else float("nan"),
            n_real=int(counts[0].sum()), n_dream=int(counts[1].sum()),
            steps_real=int(real_alive.sum()), steps_dream=int(dream_alive.sum()))
    return stats


# ------------------------------------------------------------ the check
@dataclass
class HorizonRow:
    """The rules check at horizon h: exactness at frame h, rates over frames 1..h (live frames only)."""
    horizon: int
    rows: int                       # rows alive at frame h
    exact: dict[str, float]         # field -> fraction of judged rows whose read field equals the real one
    exact_rows: dict[str, int]      # field -> rows judged (until_random fields: no such random event yet)
    deterministic_exact: float      # all `deterministic` fields exact at once
    well_formed: float              # fraction of frames with no malformed check broken
    violations_per_frame: float     # broken transition rules per frame
    violation_rate: float           # fraction of frames breaking at least one rule
    reward_f1: float                # the model's reward outputs vs the dream's reward events
    termination_f1: float
    reward_events: int              # the dream's reward events in frames 1..h
    termination_events: int


@dataclass
class GameRulesReport:
    env_id: str
    horizons: list[HorizonRow]
    check_rates: dict[str, float]    # each malformed check and rule: rate over all live frames
    random: dict[str, RandomEventStats]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_game(spec: GameSpec, real: GameRollouts, dream_frames: np.ndarray, dream_rewards: np.ndarray,
               dream_terminations: np.ndarray, horizons: tuple[int, ...] = HORIZONS) -> GameRulesReport:
    """Judge dream frames (S, H', 64, 64, 3) uint8, dreamed from real.frames[:, 0] under real.actions, with
    the model's rewards and termination outputs (S, H'); H' <= the real rollouts' H."""
    rows, steps = dream_frames.shape[:2]
    if rows != len(real.actions) or steps > real.actions.shape[1]:
        raise ValueError(f"dream frames {dream_frames.shape[:2]} must have the real rollouts' rows "
                         f"{len(real.actions)} and at most their {real.actions.shape[1]} steps")
    actions, alive = real.actions[:, :steps], real.alive[:, :steps]
    dream_states = read_rollout(spec, real.frames[:, 0], dream_frames)
    dream = transitions(spec, dream_states, actions)
    real_states = {k: v[:, :steps + 1] for k, v in real.states.items()}
    real_random = transitions(spec, real_states, actions)["random"]
    checks = _unflat(spec.malformed(_flat(dream_states, rows, steps, 1)), rows)         # {check: (S, H')}
    malformed = np.stack(list(checks.values())).any(0)                                 # (S, H')
    broken = np.stack(list(dream["violations"].values()))                              # (rules, S, H')
    said = {k: np.asarray(v)[:, :steps] > EVENT for k, v in (("reward", dream_rewards),
                                                               ("termination", dream_terminations))}
    exact = {f: (dream_states[f][:, 1:] == real_states[f][:, 1:]).reshape(rows, steps, -1).all(2)
             for f in (*spec.deterministic, *spec.until_random)}
    undisturbed = {f: np.cumsum(np.stack([real_random[e] != NOT_HAPPENED for e in events]).any(0), 1) == 0
                   for f, events in spec.until_random.items()}
    table = []
    for h in [h for h in horizons if h <= steps and alive[:, h - 1].any()]:
        live, window = alive[:, h - 1], alive[:, :h]
        judged = {f: live & undisturbed[f][:, h - 1] if f in undisturbed else live for f in exact}
        frames = max(int(window.sum()), 1)
        table.append(HorizonRow(
            horizon=h, rows=int(live.sum()),
            exact={f: float(exact[f][judged[f], h - 1].mean()) if judged[f].any() else float("nan") for f in exact},
            exact_rows={f: int(judged[f].sum()) for f in exact},
            deterministic_exact=float(np.stack([exact[f][:, h - 1] for f in spec.deterministic]).all(0)[live].mean()),
            well_formed=float(1.0 - (malformed[:, :h] & window).sum() / frames),
            violations_per_frame=float((broken[:, :, :h] & window).sum() / frames),
            violation_rate=float((broken[:, :, :h].any(0) & window).sum() / frames),
            reward_f1=f1(said["reward"][:, :h][window], dream["events"]["reward"][:, :h][window]),
            termination_f1=f1(said["termination"][:, :h][window], dream["events"]["termination"][:, :h][window]),
            reward_events=int(dream["events"]["reward"][:, :h][window].sum()),
            termination_events=int(dream["events"]["termination"][:, :h][window].sum())))
    live_frames = max(int(alive.sum()), 1)
    check_rates = {name: float((flags & alive).sum() / live_frames)
                   for name, flags in {**checks, **dream["violations"]}.items()}
    return GameRulesReport(env_id=spec.env_id, horizons=table, check_rates=check_rates,
                           random=random_event_stats(spec, real_random, alive, dream["random"], alive))


# ------------------------------------------------------------ markdown
def _cell(value: float, digits: int = 3) -> str:
    return "–" if value != value else f"{value:.{digits}f}"         # nan -> dash


def markdown(report: GameRulesReport) -> str:
    """The report as markdown: the per-horizon table, the random-event table, and each check's rate."""
    fields = list(report.horizons[0].exact) if report.horizons else []
    head = ["h", "rows", "det. exact", *[f"{f} exact (n)" for f in fields], "well-formed", "violations/frame",
            "violating frames", "reward F1 (events)", "termination F1 (events)"]
    lines = [f"### Rules check: {report.env_id}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.horizons:
        cells = [str(row.horizon), str(row.rows), _cell(row.deterministic_exact),
                 *[f"{_cell(row.exact[f])} ({row.exact_rows[f]})" for f in fields], _cell(row.well_formed),
                 _cell(row.violations_per_frame), _cell(row.violation_rate),
                 f"{_cell(row.reward_f1)} ({row.reward_events})",
                 f"{_cell(row.termination_f1)} ({row.termination_events})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| random event | rate real | rate dream | TV locations | TV noise floor | n real | n dream |",
              "|---|---|---|---|---|---|---|"]
    for event, s in report.random.items():
        lines.append(f"| {event} | {_cell(s.rate_real, 4)} | {_cell(s.rate_dream, 4)} | {_cell(s.tv)} | "
                     f"{_cell(s.tv_noise)} | {s.n_real} | {s.n_dream} |")
    lines += ["", "| check | rate per live frame |", "|---|---|"]
    lines += [f"| {name} | {_cell(rate, 4)} |" for name, rate in report.check_rates.items()]
    return "\n".join(lines) + "\n"
