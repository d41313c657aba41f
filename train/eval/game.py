"""`python -m train.eval.game`: any game's dream against its real game, from held-out starts under the same keys.

For each checkpoint: plays the real game (the checkpoints' own `env_id`, or `env_id=`) from `starts` held-out seeds
for `horizon` steps of the recording's policy (random keys held for random stretches), dreams from each real start
frame under the same keys (`denoise_steps`, float32), and reports
- the frame metrics of any game: PSNR against the real frame at each horizon, beside copy-last-frame (the start
  frame held), and the mean over all steps;
- where the game has an evaluation spec (envs.game_spec), the rules check of train.eval.game_rules: the parts the
  keys fix exact at h = 1, 32, 128, 1000, well-formed frames, violations per frame, reward and termination F1
  against the dream's own frames, and the random events' rates and where they land, dream against real;
- the same checks on the checkpoint's autoencoder alone (`autoencoder=true`, and always for an autoencoder-only
  checkpoint): the real frames encoded and decoded, the ceiling of any dream drawn through it (a sprite the
  autoencoder loses, no world model can show);
- a picture per checkpoint, real frames above and dreamed frames below, to look at before believing a number.
Writes <out>/report.md, report.json and <out>/<name>.png.

    python -m train.eval.game "checkpoints=[runs/catch/tf/checkpoint,runs/catch/self_forcing/checkpoint]"
    python -m train.eval.game "checkpoints=[DIR]" starts=8 horizon=128 out=runs/eval/quick
    python -m train.eval.game "checkpoints=[runs/catch/autoencoder/checkpoint]"    # the autoencoder alone
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from envs.dream import DreamCore
from envs.game_spec import SPECS, GameSpec, spec_for
from envs.policies import RandomPersistentPolicy
from envs.recording import make_env, resize_frame
from train.common.cli import hydra_main
from train.eval.game_rules import HORIZONS, GameRollouts, check_game, markdown, play_real
from worldmodel.checkpoint import AUTOENCODER_FILE, load, read_config
from worldmodel.metrics import psnr

HELD_OUT_SEED = 1_000_003      # evaluation starts are seeded from here on; recordings use SeedSequence seeds


@dataclass
class GameEvalConfig:
    checkpoints: list[str] = field(default_factory=list)   # causal world-model checkpoint dirs of one game (an
                                      #   autoencoder-only one gets the autoencoder check alone)
    names: list[str] = field(default_factory=list)         # display names (default: the run dir's name)
    env_id: str = ""                  # the real game; "" = the one the checkpoints name
    starts: int = 16                  # held-out real starts (rows)
    horizon: int = 1000               # steps per row
    min_repeat: int = 1               # the policy's held keys, as the recording's random policy
    max_repeat: int = 8
    env_kwargs: dict[str, Any] = field(default_factory=dict)   # the real game's, e.g. +env_kwargs.lethal=false
    denoise_steps: int = 0            # 0: each checkpoint's own sampler.steps
    autoencoder: bool = True          # also check each checkpoint's autoencoder on the real frames (the ceiling)
    picture_rows: int = 3             # rows and frames of the real-above / dream-below picture
    picture_steps: int = 16
    device: str = "cpu"
    threads: int = 0                  # torch threads; 0 keeps torch's default
    out: str = "runs/eval/game"


def real_rollouts(cfg: GameEvalConfig, spec: GameSpec | None, env_id: str, size: int) -> GameRollouts:
    """The real game's rows (with the spec's states where it has one), frames resized to the dream's `size` (the
    recorder's resize)."""
    env = make_env(env_id, **cfg.env_kwargs).unwrapped
    policy = RandomPersistentPolicy(int(env.action_space.n), cfg.min_repeat, cfg.max_repeat, np.random.default_rng(0))
    real = play_real(spec, [HELD_OUT_SEED + i for i in range(cfg.starts)], cfg.horizon, policy, env=env)
    if real.frames.shape[2:4] != (size, size):
        s, h = real.frames.shape[:2]
        real.frames = np.stack([resize_frame(f, size) for f in real.frames.reshape(s * h, *real.frames.shape[2:])]
                               ).reshape(s, h, size, size, 3)
    return real


@torch.inference_mode()
def dream(checkpoint: str, real: GameRollouts, cfg: GameEvalConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (S, H, h, w, 3) uint8, rewards (S, H), termination probabilities (S, H), dreamed from each real start
    frame under the real keys."""
    rows, steps = real.actions.shape
    core = DreamCore(checkpoint, rows, cfg.device, "float32", denoise_steps=cfg.denoise_steps or None)
    null = np.full((rows, 1), core.n_actions, np.int64)
    core.reset_rows(np.arange(rows), [HELD_OUT_SEED + i for i in range(rows)], real.frames[:, :1], null)
    frames, rewards, ends = [], [], []
    for h in range(steps):
        out = core.step(real.actions[:, h])
        frames.append(out.frames)
        rewards.append(out.rewards)
        ends.append(out.terminations)
    return np.stack(frames, 1), np.stack(rewards, 1), np.stack(ends, 1)


@torch.inference_mode()
def reconstruct(checkpoint: str, real: GameRollouts, device: str) -> np.ndarray:
    """The real frames after the start (S, H, h, w, 3) uint8 through the checkpoint's autoencoder."""
    model = load(checkpoint, device).autoencoder.eval()
    frames = real.frames[:, 1:]
    flat = frames.reshape(-1, *frames.shape[2:])
    out = [model.decode(model.encode(torch.from_numpy(flat[i:i + 256]).to(device))).cpu().numpy()
           for i in range(0, len(flat), 256)]
    return np.concatenate(out).reshape(frames.shape)


def frame_metrics(real: GameRollouts, frames: np.ndarray) -> dict[str, Any]:
    """PSNR of the dream and of copy-last-frame against the real frames, per horizon and over all live steps."""
    alive = real.alive
    model = psnr(frames.reshape(-1, *frames.shape[2:]), real.frames[:, 1:].reshape(-1, *frames.shape[2:]))
    held = np.repeat(real.frames[:, :1], frames.shape[1], 1)
    copy = psnr(held.reshape(-1, *frames.shape[2:]), real.frames[:, 1:].reshape(-1, *frames.shape[2:]))
    model, copy = (np.minimum(np.asarray(x).reshape(alive.shape), 100.0) for x in (model, copy))
    per_h = {h: {"model": float(model[alive[:, h - 1], h - 1].mean()),
                 "copy": float(copy[alive[:, h - 1], h - 1].mean())}
             for h in HORIZONS if h <= alive.shape[1] and alive[:, h - 1].any()}
    return {"psnr": per_h, "psnr_mean": float(model[alive].mean()), "copy_mean": float(copy[alive].mean())}


def picture(real: GameRollouts, frames: np.ndarray, rows: int, steps: int, file: Path) -> None:
    """Real frames above, dreamed frames below, `steps` steps of the first `rows` rows, scaled 2x."""
    steps = min(steps, frames.shape[1])
    bands = [np.concatenate([np.concatenate(list(real.frames[r, 1:steps + 1]), 1),
                             np.concatenate(list(frames[r, :steps]), 1)], 0) for r in range(min(rows, len(frames)))]
    image = np.concatenate([np.pad(b, ((0, 4), (0, 0), (0, 0)), constant_values=255) for b in bands], 0)
    cv2.imwrite(str(file), cv2.cvtColor(np.kron(image, np.ones((2, 2, 1), np.uint8)), cv2.COLOR_RGB2BGR))


def dream_report(checkpoint: str, name: str, real: GameRollouts, spec: GameSpec | None, cfg: GameEvalConfig,
                 out: Path, lines: list[str]) -> dict[str, Any]:
    """Dream one checkpoint under the real keys: its frame metrics, rules check and picture (appends to `lines`)."""
    frames, rewards, ends = dream(checkpoint, real, cfg)
    metrics = frame_metrics(real, frames)
    picture(real, frames, cfg.picture_rows, cfg.picture_steps, out / f"{name}.png")
    lines += ["| h | PSNR dream | PSNR copy-last-frame |", "|---|---|---|"]
    lines += [f"| {h} | {v['model']:.2f} | {v['copy']:.2f} |" for h, v in metrics["psnr"].items()]
    lines += [f"| all | {metrics['psnr_mean']:.2f} | {metrics['copy_mean']:.2f} |", ""]
    if spec is not None:
        report = check_game(spec, real, frames, rewards, ends)
        lines.append(markdown(report))
        metrics["rules"] = asdict(report)
    print(f"[eval.game] {name}: PSNR {metrics['psnr_mean']:.2f} (copy-last-frame {metrics['copy_mean']:.2f})",
          flush=True)
    return metrics


def main(cfg: GameEvalConfig) -> dict[str, Any]:
    if not cfg.checkpoints:
        raise ValueError("give checkpoints=[DIR, ...]")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    configs, has_dit = zip(*[read_config(c) for c in cfg.checkpoints], strict=True)
    env_id = cfg.env_id or configs[0].env_id
    if not env_id:
        raise ValueError("the checkpoints name no game: give env_id=")
    names = cfg.names or [Path(c).parent.name if Path(c).name == "checkpoint" else Path(c).name
                          for c in cfg.checkpoints]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = spec_for(env_id) if env_id in SPECS else None
    real = real_rollouts(cfg, spec, env_id, configs[0].autoencoder.frame_size)
    lines = [f"# {env_id}: {cfg.starts} held-out starts x {cfg.horizon} steps", ""]
    results: dict[str, Any] = {"env_id": env_id, "config": asdict(cfg), "models": {}}
    checked: dict[str, str] = {}    # autoencoder weights' digest -> the first checkpoint name checked with them
    for name, checkpoint, dit in zip(names, cfg.checkpoints, has_dit, strict=True):
        metrics: dict[str, Any] = {}
        lines += [f"## {name} ({checkpoint})", ""]
        if dit:
            metrics = dream_report(checkpoint, name, real, spec, cfg, out, lines)
        if spec is not None and (cfg.autoencoder or not dit):
            digest = hashlib.sha256((Path(checkpoint) / AUTOENCODER_FILE).read_bytes()).hexdigest()
            if digest in checked:       # the stages of one run share an autoencoder: check it once
                metrics["autoencoder_rules"] = results["models"][checked[digest]]["autoencoder_rules"]
                lines += [f"### {name}: its autoencoder is {checked[digest]}'s (checked above)", ""]
            else:
                ceiling = check_game(spec, real, reconstruct(checkpoint, real, cfg.device), real.rewards,
                                     real.terminations.astype(float))
                lines += [f"### {name}: its autoencoder alone (real frames encoded and decoded: the ceiling)", "",
                          markdown(ceiling)]
                metrics["autoencoder_rules"] = asdict(ceiling)
                checked[digest] = name
        if dit:
            lines.append(f"![{name}: real above, dream below]({name}.png)\n")
        results["models"][name] = metrics
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"[eval.game] wrote {out / 'report.md'}")
    return results


if __name__ == "__main__":
    hydra_main("eval_game", GameEvalConfig, main)
