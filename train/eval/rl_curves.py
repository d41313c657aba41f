"""`python -m train.eval.rl_curves`: the RL results table and learning curves from `train.rl` run dirs.

Reads each run's `metrics.jsonl` (one row per real-game evaluation), groups runs as given (`runs[i]`:
the seeds of row `names[i]`), and writes: a markdown table of the real-game return at `frames`
(mean ± std over the label's seeds, each seed's `real_return_mean` at that frame count; a row without it
gives `real_score_mean`, the game's own score, from runs that logged no return) and a plot of
real-game return vs frames (mean over seeds, shaded ± std). Baseline dirs (`mode=baseline`) give the
random row (and any scripted player envs.policies declares for the game) at 0 frames.

    python -m train.eval.rl_curves "names=['real game']" "runs=[[runs/rl/real-s0,runs/rl/real-s1,runs/rl/real-s2]]" \
        "baselines=[runs/rl/baselines,runs/rl/baselines-s1]" frames=204800 out=runs/rl/curves
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class RLCurvesConfig:
    names: list[str] = field(default_factory=list)            # one row per name: where its PPO was trained
    runs: list[list[str]] = field(default_factory=list)       # runs[i]: the run dirs of names[i], one per seed
    baselines: list[str] = field(default_factory=list)        # `train.rl mode=baseline` run dirs (one per seed)
    frames: int = 204_800             # the table's frame count: each run's evaluation at exactly these frames
    out: str = "runs/rl/curves"       # writes <out>.md and <out>.png


    def __post_init__(self) -> None:
        if len(self.names) != len(self.runs):
            raise ValueError(f"{len(self.names)} names for {len(self.runs)} groups of runs")

    def groups(self) -> dict[str, list[str]]:
        return dict(zip(self.names, self.runs, strict=True))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: not a train.rl run dir (or it has not evaluated yet)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def real_return(row: dict) -> float:
    """A row's mean real-game return: `real_return_mean`, else `real_score_mean` (rows logged before the return was)."""
    return row["real_return_mean"] if "real_return_mean" in row else row["real_score_mean"]


def score_at(rows: list[dict], frames: int, policy: str = "ppo") -> float | None:
    """The last mean real-game return logged at exactly `frames` by `policy`, or None."""
    hits = [real_return(r) for r in rows if r.get("policy") == policy and r["frames"] == frames]
    return hits[-1] if hits else None


def summary(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f} (n = {len(values)})"


def table(cfg: RLCurvesConfig) -> list[str]:
    lines = [f"| policy | trained in | real-game return at {cfg.frames:,} frames | per seed |", "|---|---|---|---|"]
    for policy, name in (("random", "random"), ("seeker", "coin-seeker")):
        values = [s for d in cfg.baselines if (s := score_at(read_metrics(d), 0, policy)) is not None]
        if values:
            lines.append(f"| {name} | — (0 frames) | {summary(values)} | {', '.join(f'{v:.2f}' for v in values)} |")
    for label, dirs in cfg.groups().items():
        values = [score_at(read_metrics(d), cfg.frames) for d in dirs]
        done = [v for v in values if v is not None]
        if len(done) < len(values):
            missing = [d for d, v in zip(dirs, values, strict=True) if v is None]
            raise ValueError(f"{label}: no evaluation at {cfg.frames} frames in {missing}")
        lines.append(f"| PPO | {label} | {summary(done)} | {', '.join(f'{v:.2f}' for v in done)} |")
    return lines


def plot(cfg: RLCurvesConfig, path: Path) -> None:
    import matplotlib                               # noqa: PLC0415  (the eval extra)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt                 # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, dirs in cfg.groups().items():
        curves = [{r["frames"]: r["real_score_mean"] for r in read_metrics(d) if r.get("policy") == "ppo"}
                  for d in dirs]
        frames = sorted(set.intersection(*(set(c) for c in curves)))
        frames = [f for f in frames if f <= cfg.frames]
        scores = np.array([[c[f] for f in frames] for c in curves])         # (seeds, points)
        ax.plot(frames, scores.mean(0), label=f"{label} (n = {len(dirs)})")
        ax.fill_between(frames, scores.mean(0) - scores.std(0), scores.mean(0) + scores.std(0), alpha=0.2)
    ax.set_xlabel("environment frames")
    ax.set_ylabel("real-game return (sum of rewards per episode)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(cfg: RLCurvesConfig) -> list[str]:
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = table(cfg)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if cfg.runs:
        plot(cfg, out.with_suffix(".png"))
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')}" + (f" and {out.with_suffix('.png')}" if cfg.runs else ""))
    return lines


if __name__ == "__main__":
    from train.common.cli import hydra_main

    hydra_main("rl_curves", RLCurvesConfig, main)
