"""What the DiT training stages (teacher, TF/DF forcing, ODE init, Self Forcing) share.

The common config fields, building a DiT + EMA + AdamW from a size preset and the latent cache,
clip sampling, the flow-matching loss, the reward/termination head loss, EMA updates, and writing
the stage's world-model checkpoint (autoencoder + EMA weights + start bank).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from train.common import distributed
from train.common.events import add_dit_cells
from train.common.latents import LatentData, load_latents
from train.common.loop import LoopConfig, TrainState, cosine_factor
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import DiTConfig, SamplerConfig, WorldModelConfig, dit_preset
from worldmodel.data import ClipDataset, sample_batch
from worldmodel.dit import DiT, DiTOutput
from worldmodel.events import EventModel, cell_maps, load_event_model, read_event_config
from worldmodel.flow import add_noise
from worldmodel.masks import previous_frames


@dataclass
class DiTStageConfig:
    """Fields every DiT stage has; stages subclass it and add their own."""
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=2000, eval_every=500, ckpt_every=200))
    size: str = "small"                       # DiT preset: tiny | small | base
    # chunk, window, sink: this config is their one source (dit_config passes them on); the checkpoint stores them
    chunk: int = 1                            # frames per causal block (1 frame-wise, 3 chunk-wise)
    window: int = 7                           # KV-cache window in frames
    sink: int = 0                             # sink frames kept forever in the cache
    clip_frames: int = 8                      # T, frames per training clip (<= window + chunk for causal stages)
    autoencoder_dir: str = "runs/game/autoencoder"        # the autoencoder stage's run dir (checkpoint + latents)
    run_dir: str = "runs/game/stage"
    batch_size: int = 16
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 100
    lr_final: float = 1.0                     # cosine decay to this fraction of lr at loop.max_steps (1 = constant)
    ema_decay: float = 0.995
    head_weight: float = 0.1                  # weight of the reward/termination head loss
    change_weight: float = 20.0               # flow-loss weight of the cells around the previous frame's sprites
    change_reach: int = 1                     # ... this many cells around them (where a sprite can go in a frame)
    event_weight: float = 10.0                # weight of a frame with a reward / termination in the head loss
                                              #   (they are rare; unweighted heads never fire)
    player_channel: bool = False              # with events_dir: the player's next cell as one more event channel
                                              #   (DiTConfig.player_channel; the event model needs its player head,
                                              #   the latent cache the reader's player_cell labels); students must match
                                              #   their teacher's
    paint_overlaps: bool = False              # the cells where two entities' event maps meet carry no loss: a model
                                              #   with overlap_paint paints them; trained on them, models drew that
                                              #   rare cell as a mode of any entity cell
                                              #   (docs/ablation.md "Overlaps: two sprites in one cell")
    events_dir: str = ""                      # a train.stages.events run dir: the random entities' next cells are drawn
                                              #   by its event model (installed frozen) and given to the generated frame
                                              #   (worldmodel.events; the latent cache needs the labels); "" = none
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def dit_config(self, latents: LatentData, causal: bool) -> DiTConfig:
        sample = latents.train[0].frames
        events = {}
        if self.events_dir:
            event_cfg = read_event_config(Path(self.events_dir) / "checkpoint")
            if event_cfg.entities != latents.event_entities:
                raise ValueError(f"the event model in {self.events_dir} draws {event_cfg.entities} entities but the "
                                 f"latent cache labels {latents.event_entities}: "
                                 "re-run the autoencoder stage with events=<reader>")
            events = dict(event_channels=event_cfg.entities, event_dim=event_cfg.dim, event_depth=event_cfg.depth,
                          event_outcomes=event_cfg.outcomes, event_player=event_cfg.player,
                          event_none=event_cfg.none, player_channel=self.player_channel)
            if self.player_channel and not event_cfg.player:
                raise ValueError(f"player_channel: the event model in {self.events_dir} has no player head; "
                                 "train it with player=true")
        elif self.player_channel:
            raise ValueError("player_channel needs entity events: set events_dir")
        return dit_preset(self.size, latent_channels=sample.shape[1], latent_size=sample.shape[2],
                          n_actions=latents.n_actions, causal=causal, chunk=self.chunk, window=self.window,
                          sink=self.sink, **events)


@dataclass
class DistillStageConfig(DiTStageConfig):
    """Fields of the stages that distill the teacher into a few-step causal student after a real prefix
    (ODE init, Self Forcing)."""
    teacher_dir: str = "runs/game/teacher"          # teacher run dir (its checkpoint/ is read)
    guidance: float = 3.0             # classifier-free guidance scale of the teacher on actions
    prefix_frames: int = 1            # real frames before the student generates (a multiple of chunk)


def check_teacher_events(cfg: DiTStageConfig, teacher: DiTConfig) -> None:
    """A distilled student is its teacher's design: the stage's player channel must be the one the teacher drew from."""
    if cfg.player_channel != teacher.player_channel:
        raise ValueError(f"the teacher has player_channel={teacher.player_channel} but this stage player_channel="
                         f"{cfg.player_channel}: set player_channel={teacher.player_channel}")


def check_clip_fits(cfg: DiTStageConfig) -> None:
    """Causal stages train on clips whose time positions are exactly those inference meets."""
    if cfg.clip_frames > cfg.window + cfg.chunk + cfg.sink or cfg.clip_frames % cfg.chunk:
        raise ValueError(f"clip_frames={cfg.clip_frames} must be a multiple of chunk={cfg.chunk} and at most "
                         f"sink + window + chunk = {cfg.sink + cfg.window + cfg.chunk}")


def build_dit_state(cfg: DiTStageConfig, model: DiT, extra_modules: dict[str, nn.Module] | None = None) -> TrainState:
    """Model + EMA copy + AdamW (decay on matrices only) + the stage's RNG."""
    if not 0.0 <= cfg.lr_final <= 1.0:
        raise ValueError(f"lr_final is a fraction of lr in [0, 1], got {cfg.lr_final}")
    distributed.init(cfg.loop.device)
    if cfg.events_dir:
        events = Path(cfg.events_dir) / "checkpoint"
        model = install_event_model(model, load_event_model(events), read_event_config(events).reach)
    model = model.to(cfg.loop.device)
    distributed.broadcast_parameters(model)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.optimizer_groups(cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    generator = torch.Generator().manual_seed(cfg.loop.seed + 1_000_003 * distributed.rank())
    modules = {"model": model, "ema": ema, **(extra_modules or {})}
    return TrainState(modules=modules, optimizers={"model": optimizer}, generator=generator)


def install_event_model(dit: DiT, event_model: EventModel, reach: list[int] | None = None) -> DiT:
    """`dit` carrying `event_model`, frozen (the flow losses never train it). The one way an event model gets into
    a DiT: a stage's `events_dir` and `train.stages.events install=[...]`. When the two disagree on the reward /
    termination head (`event_outcomes`), the DiT is rebuilt with the head as the event model has it, every other
    weight kept. `reach` (the events run's, per entity then the player) becomes the DiT's `event_reach`, cut to its
    drawn cells; None keeps the DiT's."""
    if dit.event_model is None:
        raise ValueError("the model has no entity events (event_channels = 0): its stage was trained without them, "
                         "there is no event model to replace")
    wanted = dict(event_outcomes=event_model.outcome is not None, event_player=event_model.player is not None,
                  event_none=event_model.none is not None)
    if reach is not None:
        wanted["event_reach"] = list(reach[:dit.config.drawn_cells])
    changes = {k: v for k, v in wanted.items() if getattr(dit.config, k) != v}
    if changes:                 # one rebuild: the heads' weights and the (unsaved) `reach` buffer follow the config
        dit = rebuild_dit(dit, "event_model", **changes)
    dit.event_model.load_state_dict(event_model.state_dict())
    dit.event_model.requires_grad_(False)
    return dit


def rebuild_dit(dit: DiT, part: str, **changes) -> DiT:
    """`dit` rebuilt with `changes` to its config (same device and mode), every weight kept but those of the submodule
    (or buffer) `part`, which the changes add, drop or reshape (the caller fills it)."""
    rebuilt = DiT(replace(dit.config, **changes)).to(next(dit.parameters()).device)
    missing, unexpected = rebuilt.load_state_dict(dit.state_dict(), strict=False)
    assert all(k == part or k.startswith(part + ".") for k in missing + unexpected), (missing, unexpected)
    return rebuilt.train(dit.training)


def install_into(targets: list[str], transform: Callable[[DiT, Autoencoder], DiT], what: str, source: Path,
                 stage: str) -> None:
    """Rewrite each world-model checkpoint dir of `targets` with its DiT passed through `transform` (which installs
    `what`, read from `source` by `stage`, into it; it also gets the checkpoint's autoencoder, to read, not to change);
    the autoencoder, start bank and the rest of the config are kept."""
    for target in targets:
        model = checkpoint.load(target)
        if model.dit is None:
            raise ValueError(f"{target} holds only an autoencoder: nothing to install {what} into")
        dit = transform(model.dit, model.autoencoder)
        model.config.dit = dit.config
        checkpoint.save(target, model.config, model.autoencoder, dit, model.start_frames, model.start_actions)
        print(f"[{stage}] installed {source} into {target}")


def load_clip_data(cfg: DiTStageConfig) -> tuple[LatentData, ClipDataset, ClipDataset]:
    latents = load_latents(Path(cfg.autoencoder_dir) / "latents")
    for episodes in (latents.train, latents.val):
        add_dit_cells(episodes, cfg.player_channel)
    train = ClipDataset(latents.train, cfg.clip_frames, latents.n_actions)
    val = ClipDataset(latents.val or latents.train, cfg.clip_frames, latents.n_actions)
    return latents, train, val


def load_prefixed_clip_data(cfg: DistillStageConfig) -> tuple[LatentData, ClipDataset]:
    """Checks and training clips of the stages that generate after a real prefix (ODE init, Self Forcing);
    seeds torch from the config."""
    check_clip_fits(cfg)
    check_teacher_events(cfg, checkpoint.read_config(Path(cfg.teacher_dir) / "checkpoint")[0].dit)
    prefix = cfg.prefix_frames
    if prefix % cfg.chunk or not 0 < prefix < cfg.clip_frames:
        raise ValueError(f"prefix_frames {prefix} must be a multiple of chunk {cfg.chunk} below clip_frames")
    latents, train, _ = load_clip_data(cfg)
    torch.manual_seed(cfg.loop.seed)
    return latents, train


def batch_to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    """Clip batch: latents (B, T, C, h, w) float, actions (B, T), rewards (B, T), terminations (B, T) float; with entity
    labels also event_cells (B, T, E) int64 and their one-hot maps events (B, T, E, h, w); else events is None."""
    out = {"latents": batch["frames"].to(device, torch.float32), "actions": batch["actions"].to(device),
           "rewards": batch["rewards"].to(device, torch.float32),
           "terminations": batch["terminations"].to(device, torch.float32),
           "events": None}
    if "event_cells" in batch:
        out["event_cells"] = batch["event_cells"].to(device)
        out["events"] = cell_maps(out["event_cells"], out["latents"].shape[-1])
    return out


def sample_clips(dataset: ClipDataset, cfg: DiTStageConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return batch_to_device(sample_batch(dataset, cfg.batch_size, generator), cfg.loop.device)


def change_weights(latents: torch.Tensor, change_weight: float, reach: int = 1) -> torch.Tensor:
    """Per-cell loss weight (B, T, 1, h, w) of a clip (B, T, C, h, w): `change_weight` on the cells where the
    game's rules act, else 1 (frame 0 is compared with a zero previous frame, as the model sees it).

    A game frame is mostly the previous frame over a static background; the rules act on a few of 64
    cells: those that hold a sprite in the previous frame (sprites are cells far from the batch's
    per-position median latent: any one cell holds a sprite in few frames) and the `reach` cells
    around them, where a sprite can go in one frame (a move, or a move blocked by a wall that changes
    nothing, yet the player must stay exactly there).

    The weight is a function of the previous frame only, i.e. of what the model is given, never of the
    frame it predicts: then weighting the elements of a squared error moves no optimum (each stays the
    conditional mean) and only stops the static cells from drowning the rare dynamic ones in the
    gradient. A weight read off the predicted frame (the cells that changed or hold a sprite *now*)
    is not neutral: where a sprite may go with probability p, the optimum becomes
    w p / (w p + 1 - p) of a sprite, not p, so models drew every possible next cell
    of a randomly moving entity at once ("ghosts"; docs/ablation.md "The loss weight")."""
    if change_weight == 1.0:
        return torch.ones_like(latents[:, :, :1])
    previous = previous_frames(latents)
    background = latents.flatten(0, 1).median(dim=0).values                                       # (C, h, w)
    sprites = ((previous - background) ** 2).mean(dim=2, keepdim=True) > CHANGE_THRESHOLD         # (B, T, 1, h, w)
    if reach:                                                      # grow the mask by `reach` cells each way
        b, t = sprites.shape[:2]
        grown = F.max_pool2d(sprites.flatten(0, 1).float(), 2 * reach + 1, stride=1, padding=reach)
        sprites = grown.unflatten(0, (b, t)) > 0
    return 1.0 + (change_weight - 1.0) * sprites.float()


def loss_cells(latents: torch.Tensor, events: torch.Tensor | None, cfg: DiTStageConfig) -> torch.Tensor:
    """Per-cell loss weight (B, T, 1, h, w) of a clip (B, T, C, h, w) with its event maps (B, T, E', h, w) or None: the
    change weights, and with `paint_overlaps` zero where two entities' maps meet (the painted cells)."""
    cells = change_weights(latents, cfg.change_weight, cfg.change_reach)
    if cfg.paint_overlaps and events is not None:
        cells = cells * ~overlap_cells(events)
    return cells


def overlap_cells(events: torch.Tensor) -> torch.Tensor:
    """(B, T, 1, h, w) bool the cells where two or more drawn cells' maps of events (B, T, E', h, w) meet."""
    return events.sum(2, keepdim=True) >= 2


CHANGE_THRESHOLD = 0.05   # mean squared latent difference of a changed cell (unit-variance latents; a sprite is ~1)


def flow_loss(velocity: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor | None = None,
              cells: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified-flow loss ||v - (eps - x0)||^2, averaged per frame then over frames with `weight` (B, T).

    cells: per-element weights broadcast to the latents (see `change_weights`), normalised per frame."""
    cells = torch.ones_like(latents[:, :, :1]) if cells is None else cells.expand_as(latents[:, :, :1])
    squared = ((velocity.float() - (noise - latents)) ** 2 * cells).flatten(2).mean(-1)
    per_frame = squared / cells.flatten(2).mean(-1)                                       # (B, T)
    if weight is None:
        return per_frame.mean()
    return (per_frame * weight).sum() / weight.sum().clamp_min(1.0)


def known_previous(actions: torch.Tensor, null_action: int) -> torch.Tensor:
    """(B, T) weight: 0 on a clip's first frame unless it opens an episode (null action).

    A clip cut from inside an episode lacks the frame before its first frame, so that frame is seen
    with a zero previous frame, as only an episode's first frame is at inference: no loss on it."""
    weight = torch.ones(actions.shape, device=actions.device)
    weight[:, 0] = (actions[:, 0] == null_action).float()
    return weight


def flow_weights(batch: dict[str, torch.Tensor], null_action: int) -> torch.Tensor:
    """(B, T) per-frame flow-loss weight of a clip batch (`known_previous`)."""
    return known_previous(batch["actions"], null_action)


def head_loss(out: DiTOutput, batch: dict[str, torch.Tensor], event_weight: float = 1.0,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Reward regression + termination BCE, read from a clean (sigma = 0) causal pass.

    Frames with an event (reward or termination) weigh `event_weight`; `weight` (B, T) masks frames."""
    return reward_termination_loss(out.reward, out.termination, batch["rewards"], batch["terminations"], event_weight,
                                   weight)


def reward_termination_loss(reward: torch.Tensor, termination: torch.Tensor, rewards: torch.Tensor,
                            terminations: torch.Tensor, event_weight: float = 1.0,
                            weight: torch.Tensor | None = None) -> torch.Tensor:
    """Reward MSE + termination BCE of predictions (reward, termination logit) against the true rewards and
    terminations (same shape, any); steps with an event weigh `event_weight`, `weight` masks steps."""
    step = 1.0 + (event_weight - 1.0) * ((rewards != 0) | (terminations > 0)).float()
    if weight is not None:
        step = step * weight
    per_step = ((reward.float() - rewards) ** 2
                + F.binary_cross_entropy_with_logits(termination.float(), terminations, reduction="none"))
    return (per_step * step).sum() / step.sum().clamp_min(1.0)


def noisy_clip(batch: dict[str, torch.Tensor], sigma: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame noised latents and the noise used. sigma (B, T)."""
    latents = batch["latents"]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    return add_noise(latents, noise, sigma), noise


def set_lr(state: TrainState, cfg: DiTStageConfig, name: str = "model", base_lr: float | None = None) -> float:
    """Linear warmup, then constant, or cosine down to `lr_final` x the base at `loop.max_steps`."""
    lr = (cfg.lr if base_lr is None else base_lr) * min(1.0, (state.step + 1) / max(cfg.warmup_steps, 1))
    if cfg.lr_final < 1.0 and state.step >= cfg.warmup_steps:
        done = min(1.0, (state.step - cfg.warmup_steps) / max(cfg.loop.max_steps - cfg.warmup_steps, 1))
        lr *= cosine_factor(done, cfg.lr_final)
    for group in state.optimizers[name].param_groups:
        group["lr"] = lr
    return lr


def optimizer_step(state: TrainState, cfg: DiTStageConfig, name: str = "model",
                   module: nn.Module | None = None) -> float:
    """Average across ranks, clip, step, zero the optimizer `name` (over `module`, default the module of that name);
    returns the pre-clip grad norm."""
    module = state.modules[name] if module is None else module
    distributed.average_gradients(module)
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
    state.optimizers[name].step()
    state.optimizers[name].zero_grad(set_to_none=True)
    return float(norm)


def accumulated_step(state: TrainState, cfg: DiTStageConfig,
                     micro_loss: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                     name: str = "loss") -> dict[str, float]:
    """One update of the model over `loop.grad_accum` micro-batches, then its EMA. `micro_loss()` draws a
    micro-batch and returns (the loss to backpropagate, the loss to log); returns {name, grad_norm, lr}."""
    lr = set_lr(state, cfg)
    total = 0.0
    for _ in range(cfg.loop.grad_accum):
        loss, logged = micro_loss()
        (loss / cfg.loop.grad_accum).backward()
        total += float(logged.detach()) / cfg.loop.grad_accum
    grad_norm = optimizer_step(state, cfg)
    ema_update(state.modules["ema"], state.modules["model"], cfg.ema_decay)
    return {name: total, "grad_norm": grad_norm, "lr": lr}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.lerp_(source.detach(), 1.0 - decay)


def save_world_model(cfg: DiTStageConfig, state: TrainState, latents: LatentData, stage: str,
                     module: str = "ema") -> Path:
    """<run_dir>/checkpoint: the autoencoder from its stage + this stage's (EMA) DiT + the start bank."""
    ae = checkpoint.load(Path(cfg.autoencoder_dir) / "checkpoint")
    dit: DiT = state.modules[module]
    config = WorldModelConfig(autoencoder=ae.config.autoencoder, dit=dit.config, sampler=cfg.sampler,
                              latent_scale=ae.config.latent_scale, stage=stage, env_id=ae.config.env_id)
    return checkpoint.save(Path(cfg.run_dir) / "checkpoint", config, ae.autoencoder, dit,
                           latents.start_frames, latents.start_actions)


@torch.no_grad()
def evaluate_flow(model: DiT, dataset: ClipDataset, cfg: DiTStageConfig, frame_mask: torch.Tensor | None,
                  batches: int = 4) -> dict[str, float]:
    """Held-out flow loss at fixed sigmas {0.25, 0.5, 0.75, 1.0} (same clips and noise every call)."""
    generator = torch.Generator().manual_seed(1234)
    model.eval()
    losses = []
    for _ in range(batches):
        batch = sample_clips(dataset, cfg, generator)
        b, t = batch["actions"].shape
        for level in (0.25, 0.5, 0.75, 1.0):
            sigma = torch.full((b, t), level, device=cfg.loop.device)
            noisy, noise = noisy_clip(batch, sigma, generator)
            out = model(noisy, sigma, batch["actions"], frame_mask, events=batch["events"])
            losses.append(float(flow_loss(out.velocity, batch["latents"], noise)))
    model.train()
    return {"val_flow_loss": sum(losses) / len(losses)}
