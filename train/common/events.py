"""Entity-event labels of recorded frames: where each randomly moving entity is, per frame.

The events stage trains `worldmodel.events.EventModel` (the prior over the next frame's entity cells)
on these labels, and the DiT stages condition the generated frame on them. A label is a flat latent-cell index per
entity, read from the real uint8 frames by the frame reader a game's plug-in names (train.common.plugins; the
autoencoder stage's `events` field); the autoencoder stage writes them beside the latent cache, in the same episode
order, as `events.safetensors`.

Dimensions: M frames, E entities.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from train.common.plugins import FrameReader, as_reader
from worldmodel.data import Episode

EVENTS_FILE = "events.safetensors"


def label_episodes(episodes: list[Episode], reader: str | FrameReader) -> np.ndarray:
    """All frames' entity cells (sum of episode lengths, E) int64, episodes back to back, by the frame reader
    `reader` (its name: train.common.plugins.load_reader)."""
    cells = as_reader(reader).cells
    return np.concatenate([cells(e.frames) for e in episodes])


def save_events(directory: Path, train: list[Episode], val: list[Episode], reader: str | FrameReader) -> None:
    """Write directory/events.safetensors: train/cells and val/cells, frames in the latent cache's order; and
    train/caught, val/caught, train/player_cell, val/player_cell where the reader has them."""
    reader = as_reader(reader)
    tensors = {"train/cells": torch.from_numpy(label_episodes(train, reader)),
               "val/cells": (torch.from_numpy(label_episodes(val, reader)) if val
                             else torch.zeros(0, 1, dtype=torch.int64))}
    for name, labels, dtype in (("caught", reader.caught, bool), ("player_cell", reader.player_cells, np.int64)):
        if labels is not None:   # terminal frames (the event model's termination labels), the player (its player head)
            for split, episodes in (("train", train), ("val", val)):
                parts = [labels(e.frames) for e in episodes]
                tensors[f"{split}/{name}"] = torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype))
    write_events(directory, tensors)


def write_events(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """directory/events.safetensors, written whole or not at all (a reader's labels, or learned codes)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (EVENTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    return tmp.replace(directory / EVENTS_FILE)


def attach_events(episodes: list[Episode], cells: torch.Tensor, **per_frame: torch.Tensor) -> None:
    """Put each episode's slice of the cells (M, E) into its infos["event_cells"] ((n+1, E) int64), and of each other
    per-frame label (M, ...) (`caught`, `player_cell`) into infos[name]."""
    total = sum(len(e) for e in episodes)
    if any(len(labels) != total for labels in (cells, *per_frame.values())):
        raise ValueError(f"{EVENTS_FILE} has {len(cells)} frames but the latent cache {total}: "
                         "re-run the autoencoder stage to relabel")
    start = 0
    for episode in episodes:
        episode.infos["event_cells"] = cells[start:start + len(episode)].numpy()
        for name, labels in per_frame.items():
            episode.infos[name] = labels[start:start + len(episode)].numpy()
        start += len(episode)


def termination_frames(episode: Episode) -> np.ndarray:
    """(n+1,) bool the terminal frames: the reader's (infos["caught"], its `caught`), else the frames that end the
    episode by a termination (the same frames in a recording where the reader's frames end an episode)."""
    return episode.infos["caught"] if "caught" in episode.infos else episode.frame_terminations()


def cells_and_player(episode: Episode) -> np.ndarray:
    """(n+1, E+1) the episode's entity cells (infos["event_cells"]) and then the player's (infos["player_cell"]),
    -1 where the cache has no player labels."""
    cells = episode.infos["event_cells"]
    player = episode.infos.get("player_cell", np.full(len(cells), -1, np.int64))
    return np.concatenate([cells, player[:, None]], axis=1)


def add_player_cells(episodes: list[Episode]) -> None:
    """Give each episode's infos["event_cells"] (n+1, E) the player column (n+1, E+1) of a DiT with a player channel
    (`DiTConfig.player_channel`): the reader's player cell of each frame (infos["player_cell"]), -1 where it found
    none."""
    for episode in episodes:
        if "player_cell" not in episode.infos:
            raise ValueError("player_channel needs the player's cells in the latent cache "
                             f"(player_cell, from {EVENTS_FILE}): "
                             "delete it and re-run the autoencoder stage with events=<reader> to relabel")
        episode.infos["event_cells"] = cells_and_player(episode)


def add_dit_cells(episodes: list[Episode], player: bool) -> None:
    """The event columns a DiT is given after the entities', in its maps' order (worldmodel.dit.DiT.sample_events):
    the player's cell (player_channel)."""
    if player:
        add_player_cells(episodes)
