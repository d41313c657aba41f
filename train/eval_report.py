"""What `train.eval` writes: the markdown tables, the error-vs-horizon plots and the side-by-side mp4s.

Pure presentation of the results dict {scenario: {model: {horizon: {metric: {mean, std, n}}}}};
computes nothing new. Plots use matplotlib (the `eval` extra), videos `envs.video.VideoWriter`.
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
    "pos_err": ("player position error (cells, probe vs real game) at frame h, live rollouts", "{:.2f}", "lower"),
    "artifact": ("palette artifact rate at frame h, all rollouts", "{:.4f}", "lower"),
    "score_violation": ("score-consistency violations per frame over frames 1..h, all rollouts", "{:.4f}", "lower"),
}
EVENTS = {"reward_f1": "reward F1", "termination_f1": "termination F1"}
PLOTTED = ("psnr", "ssim", "pos_err", "artifact")


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


def markdown(results: dict, cfg) -> str:
    """The whole report: the policy scenario metric by metric, then each adversarial scenario."""
    horizons = list(cfg.horizons)
    lines = [f"# Rollout evaluation: {len(cfg.seeds)} seeds x {cfg.starts} starts (policy) / "
             f"{cfg.adversarial_starts} starts (adversarial), {cfg.denoise_steps} denoising steps", "",
             "Mean ± std over seeds (each seed's mean over its rows). Live: the real episode has not ended.", ""]
    for scenario, table in results.items():
        lines += [f"## scenario: {scenario}", ""]
        for metric in METRICS:
            lines += _metric_table(table, metric, horizons)
        lines += _event_table(table, horizons[-2:])
    return "\n".join(lines)


def plot_horizons(results: dict, horizons: list[int], out: Path) -> list[Path]:
    """One png per scenario: PSNR, SSIM, position error and artifact rate vs horizon (log x), std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for scenario, table in results.items():
        fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 3.6))
        for ax, metric in zip(axes, PLOTTED):
            for name, rows in table.items():
                means = np.array([rows[h][metric]["mean"] for h in horizons], float)
                stds = np.array([rows[h][metric]["std"] for h in horizons], float)
                ax.errorbar(horizons, means, yerr=stds, marker="o", ms=3, capsize=2, label=name)
            ax.set_xscale("log")
            ax.set_xlabel("horizon (frames after the context)")
            ax.set_title(f"{metric} ({METRICS[metric][2]} is better)", fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"world model vs real game, scenario: {scenario}", fontsize=10)
        fig.tight_layout()
        path = out / f"error_vs_horizon_{scenario}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


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
