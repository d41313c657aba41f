"""What `train.eval` writes: the markdown tables, the rules / error-vs-horizon plots and the side-by-side mp4s.

Pure presentation of train.eval's report dict — "sampling" {model: ...}, "rules" {"horizons" |
"controllability": {scenario: {model: {horizon: {metric: {mean, std, n}}}}}} and "results" (the
frame metrics, same nesting); computes nothing new. Plots use matplotlib (the `eval` extra), videos
`envs.video.VideoWriter`.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from envs.video import VideoWriter, side_by_side, upscale

# metric -> (table title, format, better)
METRICS = {
    "psnr": ("PSNR (dB) at frame h, live rollouts", "{:.2f}", "higher"),
    "ssim": ("SSIM at frame h, live rollouts", "{:.3f}", "higher"),
    "pos_err": ("player position error (cells, reader vs real game) at frame h, live rollouts", "{:.2f}", "lower"),
    "artifact": ("palette artifact rate at frame h, all rollouts", "{:.4f}", "lower"),
    "score_violation": ("score-consistency violations per frame over frames 1..h, all rollouts", "{:.4f}", "lower"),
}
EVENTS = {"reward_f1": "reward F1", "termination_f1": "termination F1"}
PLOTTED = ("psnr", "ssim", "pos_err", "artifact")
# rules-check column -> (header, format); rates are per frame over frames 1..h, "@h" columns at frame h
RULES = {
    "violation": ("violations", "{:.3f}"), "player_wrong": ("player wrong", "{:.3f}"),
    "entity_count": ("not 1 of each", "{:.3f}"), "walls_broken": ("walls broken", "{:.3f}"),
    "in_wall": ("in a wall", "{:.3f}"), "enemy_jump": ("enemy jump", "{:.3f}"),
    "score_broken": ("score rule", "{:.3f}"),
    "player_exact": ("player exact @h", "{:.3f}"), "player_err": ("player err @h", "{:.2f}"),
    "psnr": ("PSNR @h", "{:.2f}"), "artifact": ("artifact @h", "{:.4f}"),
    "reward_f1": ("reward F1 vs real", "{:.3f}"), "termination_f1": ("termination F1 vs real", "{:.3f}"),
    "reward_f1_dream": ("reward F1 vs dream", "{:.3f}"), "termination_f1_dream": ("termination F1 vs dream", "{:.3f}"),
}
RULES_NOTE = ("Rates (violations .. score rule) are per frame over frames 1..h of each rollout's live frames; "
              "@h columns are read at frame h over the rollouts alive there; F1 pooled over live frames 1..h. "
              "A frame violates the rules if the player is off the real game's cell, it does not show exactly "
              "one player, coin and enemy, a wall is missing or spurious, an entity sits in a wall, the enemy "
              "moved more than one cell, or the score changed other than +1 on reaching the coin (or is "
              "unreadable). ΔPSNR (Genie's controllability): PSNR under the real actions minus PSNR of the same "
              "start dreamed under uniformly random actions, at frame h. Reward / termination F1 \"vs real\": the "
              "model's outputs against the real game's events under the same keys; \"vs dream\": against the "
              "dream's own events read from its frames (the player enters the coin's cell; the enemy is on, or "
              "swaps with, the player) — the coin and the enemy are random, so the two games' events part after "
              "the first respawn.")


def _cell(stat: dict, fmt: str) -> str:
    if stat["n"] == 0 or math.isnan(stat["mean"]):
        return "–"
    return fmt.format(stat["mean"]) + (f" ± {fmt.format(stat['std'])}" if stat["std"] > 0 else "")


def _metric_table(table: dict, metric: str, horizons: list[int]) -> list[str]:
    title, fmt, better = METRICS[metric]
    lines = [f"**{title}** ({better} is better)", "", "| model | " + " | ".join(f"h={h}" for h in horizons) + " |",
             "|---|" + "---|" * len(horizons)]
    lines += [f"| {name} | " + " | ".join(_cell(rows[h][metric], fmt) for h in horizons) + " |"
              for name, rows in table.items()]
    first = next(iter(table.values()))
    return lines + ["", "n (rollouts): " + ", ".join(f"h={h}: {first[h][metric]['n']}" for h in horizons), ""]


def _event_table(table: dict, horizons: list[int]) -> list[str]:
    lines = ["**reward / termination F1 over the live frames 1..h** (pooled over seeds; n = real events)", "",
             "| model | " + " | ".join(f"{label} h={h}" for label in EVENTS.values() for h in horizons) + " |",
             "|---|" + "---|" * (len(EVENTS) * len(horizons))]
    lines += [f"| {name} | " + " | ".join(_cell(rows[h][key], "{:.3f}") for key in EVENTS for h in horizons) + " |"
              for name, rows in table.items()]
    first = next(iter(table.values()))
    counts = ", ".join(f"{label} h={h}: {first[h][key]['n']}" for key, label in EVENTS.items() for h in horizons)
    return lines + ["", f"real events: {counts}", ""]


def _sampling_lines(sampling: dict) -> list[str]:
    lines = ["Sampling (denoising steps per frame, their sigmas, the checkpoint's sampler config):", ""]
    for name, how in sampling.items():
        ckpt = how["checkpoint"]
        lines.append(f"- {name}: {how['steps']} steps, sigmas {', '.join(f'{s:.4f}' for s in how['sigmas'])} "
                     f"(checkpoint: steps {ckpt['steps']}, max_steps {ckpt['max_steps']}, shift {ckpt['shift']})")
    return lines + [""]


def _rules_headline(table: dict, control: dict, horizons: list[int]) -> list[str]:
    """Violations per frame and player exact per horizon, and ΔPSNR, one row per model."""
    deltas = sorted({h for rows in control.values() for h in rows})
    header = ([f"violations h={h}" for h in horizons] + [f"player exact h={h}" for h in horizons]
              + [f"ΔPSNR h={h}" for h in deltas])
    lines = ["| model | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for name, rows in table.items():
        cells = [_cell(rows[h][key], "{:.3f}") for key in ("violation", "player_exact") for h in horizons]
        cells += [_cell(control[name][h], "{:.2f}") if h in control.get(name, {}) else "–" for h in deltas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _rules_at(table: dict, h: int) -> list[str]:
    """Every rules-check column at horizon h, one row per model."""
    lines = [f"**h = {h}**", "", "| model | " + " | ".join(title for title, _ in RULES.values()) + " |",
             "|---|" + "---|" * len(RULES)]
    lines += [f"| {name} | " + " | ".join(_cell(rows[h][key], fmt) for key, (_, fmt) in RULES.items()) + " |"
              for name, rows in table.items()]
    first = next(iter(table.values()))[h]
    return lines + ["", f"n (rollouts): rates {first['violation']['n']}, @h {first['player_exact']['n']}", ""]


def rules_section(rules: dict, horizons: list[int]) -> list[str]:
    lines = ["## Rules check", "", RULES_NOTE, ""]
    for scenario, table in rules["horizons"].items():
        lines += [f"### scenario: {scenario}", ""]
        lines += _rules_headline(table, rules["controllability"].get(scenario, {}), horizons)
        for h in horizons:
            lines += _rules_at(table, h)
    return lines


def markdown(report: dict, cfg) -> str:
    """The whole report: sampling, the rules check per scenario, then the frame metrics per scenario."""
    horizons = list(cfg.horizons)
    adversarial = f" / {cfg.adversarial_starts} starts (adversarial)" if cfg.adversarial else ""
    lines = [f"# Rollout evaluation: {len(cfg.seeds)} seeds x {cfg.starts} starts (policy){adversarial}", "",
             "Mean ± std over seeds (each seed's mean over its rows). Live: the real episode has not ended.", ""]
    lines += _sampling_lines(report["sampling"]) + rules_section(report["rules"], horizons)
    lines += ["## Frame metrics", ""]
    for scenario, table in report["results"].items():
        lines += [f"### scenario: {scenario}", ""]
        for metric in METRICS:
            lines += _metric_table(table, metric, horizons)
        lines += _event_table(table, horizons[-2:])
    return "\n".join(lines)


def _plot_grid(tables: dict, panels: list[tuple[str, str]], horizons: list[int], out: Path, stem: str) -> list[Path]:
    """One png per scenario of tables {scenario: {model: {h: {metric: stat}}}}: a panel per (metric, title),
    mean vs horizon (log x) with std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for scenario, table in tables.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, (metric, title) in zip(axes[0], panels):
            for name, rows in table.items():
                means = np.array([rows[h][metric]["mean"] for h in horizons], float)
                stds = np.array([rows[h][metric]["std"] for h in horizons], float)
                ax.errorbar(horizons, means, yerr=stds, marker="o", ms=3, capsize=2, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("horizon (frames after the context)")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"world model vs real game, scenario: {scenario}", fontsize=10)
        fig.tight_layout()
        path = out / f"{stem}_{scenario}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_rules(rules: dict, horizons: list[int], out: Path) -> list[Path]:
    """rules_vs_horizon_<scenario>.png: rule violations per frame over 1..h and player exact at h, vs h."""
    panels = [("violation", "rule violations per frame, frames 1..h (lower is better)"),
              ("player_exact", "player cell exact at frame h (higher is better)")]
    return _plot_grid(rules, panels, horizons, out, "rules_vs_horizon")


def plot_horizons(results: dict, horizons: list[int], out: Path) -> list[Path]:
    """error_vs_horizon_<scenario>.png: PSNR, SSIM, position error and artifact rate vs horizon."""
    panels = [(metric, f"{metric} ({METRICS[metric][2]} is better)") for metric in PLOTTED]
    return _plot_grid(results, panels, horizons, out, "error_vs_horizon")


def _labelled(frame: np.ndarray, label: str, scale: int) -> np.ndarray:
    big = upscale(frame, scale)
    strip = np.zeros((14, big.shape[1], 3), np.uint8)
    cv2.putText(strip, label[: big.shape[1] // 7], (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (235, 235, 235), 1)
    return np.concatenate([strip, big], 0)


def write_videos(videos: dict[str, np.ndarray], out: Path, frames: int, scale: int) -> list[Path]:
    """videos: name -> (k, T, H, W, 3) frames; one mp4 per start k, every name side by side (real first)."""
    if not videos:
        return []
    written = []
    starts = min(len(v) for v in videos.values())
    for k in range(starts):
        path = out / "videos" / f"policy_start{k}.mp4"
        with VideoWriter(path, fps=15, overwrite=True) as writer:
            for t in range(min(frames, min(v.shape[1] for v in videos.values()))):
                writer.write(side_by_side([_labelled(v[k, t], name, scale) for name, v in videos.items()]))
        written.append(path)
    return written
