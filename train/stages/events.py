"""Stage 1d: the event model — where the game's random entities go next (worldmodel.events).

Reads the latent cache and its entity labels (the autoencoder stage with `events=<reader>`). Every
recorded transition is one example: the previous frame's latent (noised by `latent_noise`: at run
time the model reads its own, imperfect, frames) and the action in; each random entity's cell in the
next frame out; cross-entropy. Reports held-out cross-entropy. Writes <run_dir>/checkpoint
(`event_model.safetensors` + `event_model.json`), which the DiT stages install, frozen, into every
model (`events_dir`); `install=[DIR, ...]` also writes it into existing world-model checkpoints.
`extra_datasets=[ID, ...]` adds more recordings (encoded and labelled here by `reader`), e.g. play that goes on
after a termination (a game plug-in's `record_events`): the main recording ends an episode there, so without it
the event model never sees the frame an episode would end on as a previous frame, and an open-loop dream that plays
on after a termination (the rules check) meets exactly that (docs/ablation.md "Play after a catch").
`paint_overlaps=[DIR, ...]` turns on those checkpoints' overlap paint (DiTConfig.overlap_paint), each entity
pair's latent fitted (train.common.paint) on the overlaps the extra datasets show.

    python -m train.stages.events autoencoder_dir=runs/<game>/autoencoder loop.max_steps=3000
    python -m train.stages.events ... "extra_datasets=[ID]" reader=MODULE "paint_overlaps=[DIR]"    # a rerun
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train.common.cli import hydra_main
from train.common.dit_stage import install_event_model, install_into, rebuild_dit, reward_termination_loss
from train.common.events import EVENTS_FILE, attach_events, cells_and_player, label_episodes, termination_frames
from train.common.latents import LatentData, encode_frames, load_latents
from train.common.loop import LoopConfig, TrainState, already_trained, load_state, run_loop, warmup_cosine_lr
from train.common.paint import fit_cell_latent, overlap_frames, recorded_overlaps
from worldmodel import checkpoint
from worldmodel.checkpoint import write_dir_atomically
from worldmodel.autoencoder import Autoencoder
from worldmodel.data import Episode, load_episodes
from worldmodel.dit import DiT
from worldmodel.events import (EventModel, EventModelConfig, cell_maps, event_loss, load_event_model, observed_reach,
                               read_event_config, save_event_model)


@dataclass
class EventsStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=3000, eval_every=1000, ckpt_every=250))
    autoencoder_dir: str = "runs/game/autoencoder"        # its latents/ hold the cache and events.safetensors
    run_dir: str = "runs/game/events"
    dim: int = 64                     # event model width / transformer layers
    depth: int = 3
    batch_size: int = 256             # transitions per step
    lr: float = 1e-3                  # AdamW, cosine to lr_final x lr
    lr_final: float = 0.05
    weight_decay: float = 0.01
    latent_noise: float = 0.1         # std of the noise on the previous latent in training
    outcomes: bool = True             # also learn each step's reward (MSE) and termination (BCE) given the true next
                                      #   cells, on the main recording only (an extra recording may go on after one)
    outcome_weight: float = 1.0
    player: bool = False              # also learn the player's next cell (cross-entropy; the latent cache's player_cell
                                      #   labels)
    outcome_event_weight: float = 10.0   # weight of a step with a reward or a termination (rare)
    overlap_weight: float = 1.0       # how much more often a transition from an overlap (two entities on one cell,
                                      #   the player counted) is drawn into a batch (docs/model.md "Entity reach")
    reach_anywhere: int = 2           # an entity seen moving more cells than this in one recorded frame (a respawn) may
                                      #   land anywhere; the others never further than they were seen to move
                                      #   (DiTConfig.event_reach, installed with the model); -1 = no limits
    init_dir: str = ""                # an events run dir whose checkpoint starts this run (fine-tuning), "" = fresh
    install: list[str] = field(default_factory=list)   # world-model checkpoint dirs that get this event model
    paint_overlaps: list[str] = field(default_factory=list)  # world-model checkpoint dirs (with >= 2 entities) that
                                                              #   paint where two drawn entities meet (overlap_paint)
    extra_datasets: list[str] = field(default_factory=list)   # more Minari datasets (under data_root) to train on,
                                      #   encoded with the autoencoder and labelled by `reader` here (e.g. play that
                                      #   goes on after a termination, which the DiT stages' recording never shows)
    data_root: str = "data/minari"
    reader: str = ""                  # frame reader of the extra datasets (train.common.plugins.load_reader: a
                                      #   module, or a game whose plug-in names one; the pipeline passes its own)


@dataclass
class Transitions:
    previous: torch.Tensor      # (N, C, h, w) float32 latent of the frame before
    actions: torch.Tensor       # (N,) int64
    cells: torch.Tensor         # (N, E) int64 entity cells of the next frame
    rewards: torch.Tensor       # (N,) float32
    terminations: torch.Tensor  # (N,) float32
    outcome_weight: torch.Tensor   # (N,) float32: 1 where the reward / termination labels are trained on
    player: torch.Tensor           # (N,) int64 the player's cell in the next frame, -1 where unknown
    overlap: torch.Tensor          # (N,) bool: the frame before shows two entities (the player included) on one cell


def transitions(episodes: list[Episode], outcomes: bool = True) -> Transitions:
    actions = torch.from_numpy(np.concatenate([e.actions for e in episodes]))
    overlap = torch.from_numpy(np.concatenate([overlap_frames_before(e) for e in episodes]))
    return Transitions(previous=torch.from_numpy(np.concatenate([e.frames[:-1] for e in episodes])), actions=actions,
                       cells=torch.from_numpy(np.concatenate([e.infos["event_cells"][1:] for e in episodes])),
                       rewards=torch.from_numpy(np.concatenate([e.rewards for e in episodes]).astype(np.float32)),
                       terminations=torch.from_numpy(
                           np.concatenate([termination_steps(e) for e in episodes]).astype(np.float32)),
                       outcome_weight=torch.full(actions.shape, float(outcomes)),
                       player=torch.from_numpy(np.concatenate([e.infos.get("player_cell", np.full(len(e) + 1, -1))[1:]
                                                               for e in episodes]).astype(np.int64)),
                       overlap=overlap)


def overlap_frames_before(episode: Episode) -> np.ndarray:
    """(n,) bool per step: its frame before shows two tracked entities on one cell (the player counts where the
    cache labels it): an entity on another or on the player, states rare in play where the event model leaked mass
    onto cells the entity cannot reach (docs/model.md "Entity reach")."""
    cells = cells_and_player(episode)[:-1]                                          # (n, E+1)
    seen = (cells >= 0) & (cells < episode.frames.shape[-1] ** 2)                 # not unknown, not nowhere (K)
    same = (cells[:, :, None] == cells[:, None, :]) & seen[:, :, None] & seen[:, None, :]          # (n, E+1, E+1)
    return (same & ~np.eye(cells.shape[1], dtype=bool)).any((1, 2))       # off the diagonal: a pair on one cell


def termination_steps(episode: Episode) -> np.ndarray:
    """(n,) the termination label of each step: whether it ends on a terminal frame (termination_frames: the reader's
    `caught` frames where the cache has them, so play that goes on after a termination says so too and the head learns
    one right after another; else the recorded terminations)."""
    return termination_frames(episode)[1:]


def extra_transitions(cfg: EventsStageConfig) -> list[Transitions]:
    """The extra datasets as transitions: frames encoded by the autoencoder stage's checkpoint, labelled by the
    reader."""
    if not cfg.extra_datasets:
        return []
    autoencoder = checkpoint.load(Path(cfg.autoencoder_dir) / "checkpoint").autoencoder.eval()
    out = []
    for dataset_id in cfg.extra_datasets:
        episodes, _ = load_episodes(dataset_id, cfg.data_root)
        cells = label_episodes(episodes, cfg.reader)
        encoded = [Episode(frames=encode_frames(autoencoder, e.frames), actions=e.actions, rewards=e.rewards,
                           terminations=e.terminations, truncations=e.truncations) for e in episodes]
        attach_events(encoded, torch.from_numpy(cells))
        out.append(transitions(encoded, outcomes=False))
    return out


def model_config(cfg: EventsStageConfig, latents: LatentData) -> EventModelConfig:
    if not latents.event_entities:
        raise ValueError(f"the latent cache in {cfg.autoencoder_dir}/latents has no entity labels: run the autoencoder "
                         "stage with events=<reader> (a frame reader module, train.common.plugins) to add them")
    sample = latents.train[0].frames
    return EventModelConfig(latent_channels=sample.shape[1], latent_size=sample.shape[2], n_actions=latents.n_actions,
                            entities=latents.event_entities, dim=cfg.dim, depth=cfg.depth, outcomes=cfg.outcomes,
                            player=cfg.player, reach=recorded_reach(cfg, latents, sample.shape[2]),
                            none=any(bool((e.infos["event_cells"] >= sample.shape[2] ** 2).any())   # learned codes
                                     for e in latents.train))


def recorded_reach(cfg: EventsStageConfig, latents: LatentData, latent_size: int) -> list[int]:
    """The entities' (then, with `player`, the player's) most cells moved in one recorded frame
    (worldmodel.events.observed_reach); [] with reach_anywhere < 0."""
    if cfg.reach_anywhere < 0:
        return []
    episodes = latents.train + latents.val
    cells = [cells_and_player(e) if cfg.player else e.infos["event_cells"] for e in episodes]
    return observed_reach(cells, latent_size, cfg.reach_anywhere)


def outcome_loss(model: EventModel, tokens: torch.Tensor, data: Transitions, index: torch.Tensor,
                 cfg: EventsStageConfig) -> torch.Tensor:
    """Reward MSE + termination BCE given the true next cells, rare steps x outcome_event_weight, masked rows out."""
    device = tokens.device
    maps = cell_maps(data.cells[index].to(device), int(data.previous.shape[-1]))
    logits = model.outcome_logits(tokens, maps)                                                # (n, 2)
    return reward_termination_loss(logits[:, 0], logits[:, 1], data.rewards[index].to(device),
                                   data.terminations[index].to(device), cfg.outcome_event_weight,
                                   data.outcome_weight[index].to(device))


def train_step(state: TrainState, data: Transitions, cfg: EventsStageConfig) -> dict[str, float]:
    model, optimizer = state.modules["events"], state.optimizers["events"]
    lr = warmup_cosine_lr(optimizer, state.step, cfg.loop.max_steps, cfg.lr, cfg.lr_final)
    index = draw_batch(data, cfg, state.generator)
    previous = data.previous[index]
    previous = previous + cfg.latent_noise * torch.randn(previous.shape, generator=state.generator)
    device = cfg.loop.device
    tokens = model.tokens(previous.to(device), data.actions[index].to(device))
    loss = event_loss(model.cell_logits(tokens), data.cells[index].to(device))
    if cfg.outcomes:
        loss = loss + cfg.outcome_weight * outcome_loss(model, tokens, data, index, cfg)
    player = data.player[index].to(device)
    if cfg.player and bool((player >= 0).any()):      # rows without a label (an extra recording) do not count
        loss = loss + F.cross_entropy(model.player_logits(tokens)[player >= 0], player[player >= 0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return {"loss": float(loss.detach()), "lr": lr}


def draw_batch(data: Transitions, cfg: EventsStageConfig, generator: torch.Generator) -> torch.Tensor:
    """(batch_size,) transition indices, uniform, or with overlaps `overlap_weight` times as likely."""
    if cfg.overlap_weight == 1.0:
        return torch.randint(len(data.actions), (cfg.batch_size,), generator=generator)
    weight = torch.where(data.overlap, cfg.overlap_weight, 1.0)
    return torch.multinomial(weight, cfg.batch_size, replacement=True, generator=generator)


@torch.no_grad()
def evaluate(state: TrainState, data: Transitions, cfg: EventsStageConfig) -> dict[str, float]:
    """Held-out cross-entropy per entity (clean latents, every held-out transition); with outcomes, the F1 of
    rewards (> 0.5) and terminations (p > 0.5) given the true next cells."""
    model = state.modules["events"].eval()
    device = cfg.loop.device
    losses, outcomes, players = [], [], []
    for start in range(0, len(data.actions), 1024):
        part = torch.arange(start, min(start + 1024, len(data.actions)))
        tokens = model.tokens(data.previous[part].to(device), data.actions[part].to(device))
        logits = model.cell_logits(tokens)                                                   # (n, E, K)
        losses.append(float(F.cross_entropy(logits.transpose(1, 2), data.cells[part].to(device), reduction="sum")))
        if cfg.outcomes:
            maps = cell_maps(data.cells[part].to(device), int(data.previous.shape[-1]))
            outcomes.append(model.outcome_logits(tokens, maps).cpu())
        if cfg.player:
            players.append(model.player_logits(tokens).argmax(-1).cpu())
    model.train()
    metrics = {"val_ce": float(sum(losses)) / (len(data.actions) * data.cells.shape[1])}
    if players:
        known = data.player >= 0
        metrics["val_player_exact"] = float((torch.cat(players)[known] == data.player[known]).float().mean())
    if outcomes:
        out = torch.cat(outcomes)
        metrics["val_reward_f1"] = f1(out[:, 0] > 0.5, data.rewards > 0.5)
        metrics["val_termination_f1"] = f1(out[:, 1] > 0.0, data.terminations > 0.5)
    return metrics


def f1(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    hits = float((predicted & actual).sum())
    return 2 * hits / max(float(predicted.sum() + actual.sum()), 1.0)


def install_paint(targets: list[str], flag: str, buffer: str, value: Callable[[DiT, Autoencoder], np.ndarray],
                  source: Path) -> None:
    """Turn on the DiT paint `flag` of each world-model checkpoint dir of `targets`, its `buffer` filled by `value`
    (given the target's DiT and autoencoder)."""
    def transform(dit: DiT, autoencoder: Autoencoder) -> DiT:
        painted = rebuild_dit(dit, buffer, **{flag: True})
        getattr(painted, buffer).copy_(torch.from_numpy(value(dit, autoencoder)))
        return painted

    install_into(targets, transform, f"the paint ({buffer})", source, "events")


def install_overlap_paint(cfg: EventsStageConfig, targets: list[str]) -> None:
    """overlap_paint: where two drawn cells meet (the entities; the player too with player_channel), each pair's latent
    fitted (train.common.paint) to the target's decoder on the overlaps the extra datasets show; NaN for a pair they
    never show."""
    if not targets:
        return
    if not cfg.extra_datasets:
        raise ValueError("paint_overlaps fits each overlap's latent on recorded frames: set extra_datasets "
                         "(a game plug-in's events recording, where the entities walk over each other)")
    frames, cells = recorded_overlaps([e for dataset_id in cfg.extra_datasets
                                       for e in load_episodes(dataset_id, cfg.data_root)[0]], cfg.reader)

    def value(dit: DiT, autoencoder: Autoencoder) -> np.ndarray:                                  # (P, C)
        latents = []
        for pair in dit.config.entity_pairs:       # a pair never recorded in one cell gets NaN: not painted
            picked = overlap_frames(frames, cells, pair)
            latents.append(fit_cell_latent(autoencoder, *picked) if len(picked[0])
                           else np.full(dit.config.latent_channels, np.nan, np.float32))
        if all(np.isnan(latent).all() for latent in latents):
            raise ValueError(f"{cfg.extra_datasets} never show two drawn cells in one cell: "
                             "no overlap to fit a painted latent on (record more play, or leave paint_overlaps off)")
        return np.stack(latents)

    install_paint(targets, "overlap_paint", "overlap_latents", value, Path(cfg.autoencoder_dir))


def install_all(cfg: EventsStageConfig, event_dir: Path) -> None:
    """Everything this stage writes into world-model checkpoints: the event model, then the paints."""
    install(event_dir, list(cfg.install))
    install_overlap_paint(cfg, list(cfg.paint_overlaps))


def starting_model(cfg: EventsStageConfig, config: EventModelConfig) -> EventModel:
    """A fresh event model, or with `init_dir` the one that run wrote (it must have this stage's shapes)."""
    if not cfg.init_dir:
        return EventModel.from_config(config)
    stored = read_event_config(Path(cfg.init_dir) / "checkpoint")
    if replace(stored, reach=config.reach) != config:
        raise ValueError(f"init_dir {cfg.init_dir}: its event model is {stored}, this stage makes {config}")
    return load_event_model(Path(cfg.init_dir) / "checkpoint")


def install(event_dir: Path, targets: list[str]) -> None:
    """Write this event model into each world-model checkpoint dir of `targets` (its DiT must have event channels)."""
    event_model, reach = load_event_model(event_dir), read_event_config(event_dir).reach
    install_into(targets, lambda dit, _: install_event_model(dit, event_model, reach), "the event model", event_dir,
                 "events")


def main(cfg: EventsStageConfig) -> dict[str, float]:
    out = Path(cfg.run_dir) / "checkpoint"
    if already_trained(Path(cfg.run_dir), cfg.loop, out):       # a rerun: no transitions to load and encode
        install_all(cfg, out)
        return {}
    latents = load_latents(Path(cfg.autoencoder_dir) / "latents")
    config = model_config(cfg, latents)
    train, val = transitions(latents.train), transitions(latents.val or latents.train)
    if cfg.player and not bool((train.player >= 0).any()):
        raise ValueError(f"player=true needs the player's cells in {cfg.autoencoder_dir}/latents (player_cell): "
                         f"delete its {EVENTS_FILE} and re-run the autoencoder stage with events=<reader> to relabel")
    extra = extra_transitions(cfg)
    if extra:
        train = Transitions(*(torch.cat([getattr(t, f.name) for t in [train, *extra]]) for f in fields(Transitions)))
    torch.manual_seed(cfg.loop.seed)
    model = starting_model(cfg, config).to(cfg.loop.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState(modules={"events": model}, optimizers={"events": optimizer},
                       generator=torch.Generator().manual_seed(cfg.loop.seed))
    run_dir = Path(cfg.run_dir)
    load_state(run_dir, state)
    metrics = run_loop("events", cfg.loop, run_dir, state, lambda s: train_step(s, train, cfg),
                       lambda s: evaluate(s, val, cfg),
                       lambda s: write_dir_atomically(
                           out, lambda tmp: save_event_model(tmp, s.modules["events"], config)))
    install_all(cfg, out)
    return metrics


if __name__ == "__main__":
    hydra_main("events", EventsStageConfig, main)
