"""Game plug-ins: configs/games/<game>.yaml, and the frame reader each may name.

A game's plug-in is the one place that knows the game (docs/training.md "The pipeline"): its recording policy, its
extra recordings, its stages' values, and `reader`, the module that labels its recorded frames (where its random
entities are, where the player is). The model and its training only call what the plug-in names.

A frame reader is a module that defines `cells(frames) -> (M, E) int64` (each random entity's flat latent cell in
uint8 frames (M, H, W, 3)) and may define `caught(frames) -> (n+1,) bool` (per frame of one episode: the step into it
caught the player) and `player_cells(frames) -> (M,) int64` (the player's flat cell, -1 where none is seen).
`load_reader(name)` resolves `name` through the registry the plug-ins fill (a game with a plug-in -> the module its
`reader` names), else as a module path itself; "" means none.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from train.common.cli import CONFIG_DIR

GAMES_DIR = Path(CONFIG_DIR) / "games"
Labels = Callable[[np.ndarray], np.ndarray]


def game_name(env_id: str) -> str:
    """The game a Gymnasium id names, as the pipeline names its datasets, run dirs and plug-in: the id without its
    namespace and version, lower case ("ALE/Pong-v5" -> "pong")."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1]).lower()


def game_plugin(game: str) -> dict[str, Any]:
    """configs/games/<game>.yaml as a dict ({} for a game without one)."""
    file = GAMES_DIR / f"{game}.yaml"
    return (OmegaConf.to_container(OmegaConf.load(file)) or {}) if file.is_file() else {}


def reader_modules() -> dict[str, str]:
    """The registry: each game whose plug-in names a reader -> that reader's module."""
    out = {}
    for file in sorted(GAMES_DIR.glob("*.yaml")):
        module = game_plugin(file.stem).get("reader", "")
        if module:
            out[file.stem] = str(module)
    return out


@dataclass(frozen=True)
class FrameReader:
    """What a reader module gives: the entities' cells, and where it has them the terminal frames and the player's
    cells."""
    name: str                          # the module
    cells: Labels
    caught: Labels | None = None
    player_cells: Labels | None = None


def load_reader(name: str) -> FrameReader | None:
    """The frame reader `name` names (a game with a plug-in, or a module path); None for ""."""
    if not name:
        return None
    registry = reader_modules()
    module_name = registry.get(name, name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name == error.name or module_name.startswith(error.name + ".")):
            raise                      # the module exists but imports something missing
        raise ValueError(f"unknown frame reader {name!r}: neither a game plug-in with a reader ({sorted(registry)}) "
                         "nor an importable module (or '' for none)") from error
    if not callable(getattr(module, "cells", None)):
        raise ValueError(f"frame reader {module_name!r} defines no cells(frames) function")
    return FrameReader(module_name, module.cells, getattr(module, "caught", None),
                       getattr(module, "player_cells", None))


def as_reader(reader: str | FrameReader) -> FrameReader:
    """A reader from its name (or itself); refuses "" (no reader), where labels are asked for."""
    loaded = load_reader(reader) if isinstance(reader, str) else reader
    if loaded is None:
        raise ValueError("no frame reader named ('' is none): the frames cannot be labelled")
    return loaded
