"""Plumbing every training stage shares: the loop config, resumable train state, the loop itself.

A stage supplies `build` (models, optimisers, data) and `train_step` (the only place with
backward/step); this module runs the loop with a progress bar (loss, it/s), a metrics JSONL file a
plot can be made from, a NaN guard that stops with a message and keeps the last good checkpoint,
and atomic, resumable checkpoints (modules incl. EMA, optimisers, step, RNG) — safetensors + JSON,
never pickle.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from train.common import distributed
from worldmodel.checkpoint import CheckpointError, read_tensors, write_dir_atomically

STATE_DIR = "train_state"
METRICS_FILE = "metrics.jsonl"


@dataclass
class LoopConfig:
    """Knobs of the loop itself, shared by all stages."""
    max_steps: int = 1000          # optimizer steps in total (a resumed run continues to this)
    log_every: int = 10            # write train/* and perf/* metrics every N steps
    eval_every: int = 250          # run the stage's evaluation every N steps (0 = never)
    ckpt_every: int = 100          # save the resumable state every N steps
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False             # bfloat16 autocast for forward passes
    grad_accum: int = 1            # micro-batches per optimizer step
    threads: int = 0               # torch CPU threads (0 = torch default)
    progress: bool = True          # show a tqdm bar


class NonFiniteLoss(RuntimeError):
    """A loss became NaN/inf; the run stops and the last good checkpoint stays on disk."""


@dataclass
class TrainState:
    """Exactly what a resumable checkpoint holds."""
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    step: int = 0
    extra: dict = field(default_factory=dict)     # JSON-able stage data (e.g. best val loss)
    scratch: dict = field(default_factory=dict)   # per-process working data, never saved (e.g. a reused rollout)


def cosine_factor(done: float, final: float) -> float:
    """Learning-rate factor of a cosine schedule: 1 at done = 0, `final` at done >= 1."""
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


def warmup_cosine_lr(optimizer: torch.optim.Optimizer, step: int, max_steps: int, lr: float, final: float,
                     warmup: int = 100) -> float:
    """Set every param group's learning rate for `step`: linear warmup over `warmup` steps, then the cosine to
    `final` x lr at max_steps; returns it."""
    value = lr * min(1.0, (step + 1) / warmup) * cosine_factor(step / max(max_steps, 1), final)
    for group in optimizer.param_groups:
        group["lr"] = value
    return value


def autocast(loop: LoopConfig) -> contextlib.AbstractContextManager:
    device_type = torch.device(loop.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=loop.bf16)


# ------------------------------------------------------------------ resumable state
def _flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{index}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    prefix = f"{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, slot = key[len(prefix):].split("/", 1)
            state.setdefault(int(index), {})[slot] = value
    for key, value in meta["scalars"].items():
        index, slot = key.split("/", 1)
        state.setdefault(int(index), {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(run_dir: Path, state: TrainState) -> None:
    """Atomically write run_dir/train_state (modules.safetensors, optim.safetensors, state.json)."""
    def fill(tmp: Path) -> None:
        modules = {f"{name}/{key}": value.detach().contiguous().cpu()
                   for name, module in state.modules.items() for key, value in module.state_dict().items()}
        save_file(modules, str(tmp / "modules.safetensors"))
        optim_tensors, optim_meta = {}, {}
        for name, optimizer in state.optimizers.items():
            tensors, meta = _flatten_optimizer(name, optimizer)
            optim_tensors.update(tensors)
            optim_meta[name] = meta
        save_file(optim_tensors, str(tmp / "optim.safetensors"))
        save_file({"generator": state.generator.get_state(), "torch": torch.get_rng_state()},
                  str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": state.step, "optimizers": optim_meta,
                                                    "extra": state.extra}))

    write_dir_atomically(run_dir / STATE_DIR, fill)


def already_trained(run_dir: Path, loop: LoopConfig, output: Path) -> bool:
    """Whether run_dir's saved state reached loop.max_steps and the stage's `output` exists: a rerun has nothing to
    train (a stage whose model is built from its data can then skip loading the data)."""
    meta = Path(run_dir) / STATE_DIR / "state.json"
    try:
        return Path(output).exists() and int(json.loads(meta.read_text())["step"]) >= loop.max_steps
    except (OSError, json.JSONDecodeError, KeyError, ValueError):
        return False


def load_state(run_dir: Path, state: TrainState) -> bool:
    """Restore `state` in place from run_dir/train_state if it exists; returns whether it did."""
    directory = run_dir / STATE_DIR
    if not directory.exists():
        return False
    try:
        meta = json.loads((directory / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{directory / 'state.json'}: unreadable ({error}); "
                              f"delete {directory} to restart") from error
    modules = read_tensors(directory / "modules.safetensors")
    for name, module in state.modules.items():
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in modules.items() if k.startswith(prefix)})
    optim = read_tensors(directory / "optim.safetensors")
    for name, optimizer in state.optimizers.items():
        optimizer.load_state_dict(_unflatten_optimizer(name, optim, meta["optimizers"][name]))
    rng = load_file(str(directory / "rng.safetensors"))
    state.generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    state.step = int(meta["step"])
    state.extra = meta["extra"]
    if distributed.rank() > 0:   # the saved RNG is rank 0's; other ranks must keep drawing other clips
        state.generator.manual_seed(int(state.generator.initial_seed()) + 1_000_003 * distributed.rank() + state.step)
    return True


# ------------------------------------------------------------------ the loop
class MetricsLog:
    """Append-only JSONL of {"step": k, "train/loss": ..., "perf/it_s": ...} rows."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **metrics}) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def run_loop(name: str, loop: LoopConfig, run_dir: Path, state: TrainState, train_step: Callable[[TrainState], dict],
             evaluate: Callable[[TrainState], dict] | None = None,
             on_save: Callable[[TrainState], None] | None = None) -> dict:
    """Run `train_step` from state.step to loop.max_steps; log, evaluate, checkpoint, guard against NaN.

    `on_save` writes the stage's world-model checkpoint next to the resumable state. Returns the
    last metrics (train and eval).
    """
    if loop.threads:
        torch.set_num_threads(loop.threads)
    main_rank = distributed.is_main()
    log = MetricsLog(run_dir / METRICS_FILE)
    bar = tqdm(total=loop.max_steps, initial=state.step, desc=name, disable=not (loop.progress and main_rank),
               dynamic_ncols=True)
    last: dict[str, float] = {}
    tick, ticks = time.perf_counter(), 0

    def save() -> None:
        if not main_rank:
            return
        save_state(run_dir, state)
        if on_save is not None:
            on_save(state)

    while state.step < loop.max_steps:
        metrics = train_step(state)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            bar.close()
            raise NonFiniteLoss(f"{name}: non-finite {bad} at step {state.step + 1}; stopped, the last good "
                                f"checkpoint in {run_dir / STATE_DIR} is kept (lower the lr or enable grad clipping)")
        state.step += 1
        ticks += 1
        bar.update(1)
        last = {f"train/{k}": v for k, v in metrics.items()}
        if state.step % loop.log_every == 0 or state.step == loop.max_steps:
            now = time.perf_counter()
            last["perf/it_s"] = ticks / max(now - tick, 1e-9)
            tick, ticks = now, 0
            if main_rank:
                log.write(state.step, last)
            bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in last.items()})
        if evaluate is not None and loop.eval_every and (state.step % loop.eval_every == 0
                                                         or state.step == loop.max_steps):
            scores = {f"eval/{k}": v for k, v in evaluate(state).items()}
            if main_rank:
                log.write(state.step, scores)
            last.update(scores)
        if state.step % loop.ckpt_every == 0 or state.step == loop.max_steps:
            save()
    bar.close()
    if on_save is not None and not (run_dir / STATE_DIR).exists():
        save()
    return last
