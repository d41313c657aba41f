"""Episodes and training clips: reading recorded Minari datasets and cutting them into windows.

Owns the `Episode` record, `load_episodes` (a Minari HDF5 dataset written by train.record, read
with h5py), the seeded train/val split by episode, and `ClipDataset`: every window of T
consecutive frames inside one episode, with the per-frame action, reward and termination.
Knows nothing of environments or trainers (it does not import envs or train).

Per-frame alignment, which the model relies on: frame k of an episode is paired with the action
that produced it,
    frame_actions[k]      = actions[k-1] for k >= 1, NULL_ACTION (= n_actions) for k = 0
    frame_rewards[k]      = rewards[k-1],            0     for k = 0
    frame_terminations[k] = terminations[k-1],       False for k = 0
so the model reserves one extra action embedding (id n_actions) for "no action before this frame".

Dimensions: T frames per clip, B clips per batch; a frame is (H, W, C) uint8 pixels or any float
latent shape (e.g. (C, h, w)). Frames stay in their stored dtype here; the model side converts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

METADATA_FILE = "metadata.json"     # Minari's files inside <root>/<dataset_id>/data/
HDF5_FILE = "main_data.hdf5"


def null_action(n_actions: int) -> int:
    """The action id paired with an episode's first frame (no key was pressed before it)."""
    return n_actions


@dataclass
class Episode:
    """One episode: n steps, n+1 frames (the reset frame, then one per step). Frames are kept in C order."""
    frames: np.ndarray          # (n+1, ...) uint8 (n+1, H, W, C) pixels, or float latents
    actions: np.ndarray         # (n,) int64, actions[i] leads from frames[i] to frames[i+1]
    rewards: np.ndarray         # (n,) float32, paid by actions[i]
    terminations: np.ndarray    # (n,) bool
    truncations: np.ndarray     # (n,) bool
    infos: dict[str, np.ndarray] = field(default_factory=dict)   # per-frame arrays (n+1, ...), may be empty

    def __post_init__(self) -> None:
        # C order, so windows slice cheaply and packing (safetensors) accepts them; a no-op when already so
        self.frames = np.ascontiguousarray(self.frames)
        n = len(self.actions)
        if len(self.frames) != n + 1:
            raise ValueError(f"an episode of {n} steps needs {n + 1} frames, got {len(self.frames)}")
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"an episode of {n} steps needs {n} {name}, got {len(getattr(self, name))}")

    def __len__(self) -> int:
        """Number of frames (n+1)."""
        return len(self.frames)

    def frame_actions(self, n_actions: int) -> np.ndarray:
        """(n+1,) int64: the action that produced each frame; NULL_ACTION (= n_actions) for frame 0."""
        return np.concatenate([[null_action(n_actions)], self.actions]).astype(np.int64)

    def frame_rewards(self) -> np.ndarray:
        """(n+1,) float32: the reward paid on reaching each frame; 0 for frame 0."""
        return np.concatenate([[0.0], self.rewards]).astype(np.float32)

    def frame_terminations(self) -> np.ndarray:
        """(n+1,) bool: whether reaching each frame ended the episode; False for frame 0."""
        return np.concatenate([[False], self.terminations]).astype(np.bool_)


def dataset_env_id(dataset_id: str, root: str | Path) -> str:
    """The Gymnasium id of the env a Minari dataset was recorded from ("" when its metadata names none)."""
    meta_file = Path(root) / dataset_id / "data" / METADATA_FILE
    try:
        spec = json.loads(json.loads(meta_file.read_text()).get("env_spec") or "{}")
    except (OSError, json.JSONDecodeError):
        return ""
    return str(spec.get("id") or "")


def load_episodes(dataset_id: str, root: str | Path) -> tuple[list[Episode], int]:
    """All episodes of the Minari dataset <root>/<dataset_id>, and the number of actions.

    Raises FileNotFoundError if there is no such dataset, ValueError if it is not a lossless
    HDF5 dataset of image frames with Discrete actions.
    """
    data_dir = Path(root) / dataset_id / "data"
    meta_file = data_dir / METADATA_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"no dataset {dataset_id!r} under root {str(root)!r} (missing {meta_file}); "
                                f"record one with: python -m train.stages.record dataset_id={dataset_id} root={root}")
    meta = json.loads(meta_file.read_text())
    if meta.get("data_format") != "hdf5":
        raise ValueError(f"dataset {dataset_id!r} is stored as {meta.get('data_format')!r}; only 'hdf5' is read")
    if meta.get("jpeg_encoding", True):
        raise ValueError(f"dataset {dataset_id!r} stores JPEG-encoded (lossy) frames; record it losslessly "
                         "with python -m train.stages.record")
    action_space = json.loads(meta["action_space"])
    if action_space.get("type") != "Discrete" or action_space.get("start", 0) != 0:
        raise ValueError(f"dataset {dataset_id!r} needs a Discrete action space starting at 0, got {action_space}")
    n_actions = int(action_space["n"])

    episodes = []
    with h5py.File(data_dir / HDF5_FILE, "r") as file:
        for index in range(int(meta["total_episodes"])):
            group = file[f"episode_{index}"]
            frames = group["observations"]
            if not isinstance(frames, h5py.Dataset) or frames.ndim < 2:
                raise ValueError(f"dataset {dataset_id!r}: episode {index} observations are not frames")
            episodes.append(Episode(
                frames=frames[()],
                actions=group["actions"][()].astype(np.int64),
                rewards=group["rewards"][()].astype(np.float32),
                terminations=group["terminations"][()].astype(np.bool_),
                truncations=group["truncations"][()].astype(np.bool_),
                infos=_read_infos(group["infos"]) if "infos" in group else {},
            ))
    if not episodes:
        raise ValueError(f"dataset {dataset_id!r} under root {str(root)!r} has no episodes")
    return episodes, n_actions


def _read_infos(group: h5py.Group, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten an infos group to {"key" or "parent/key": array}."""
    infos = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            infos.update(_read_infos(item, f"{prefix}{key}/"))
        else:
            infos[f"{prefix}{key}"] = item[()]
    return infos


def split_by_episode(episodes: list[Episode], val_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """Seeded split into (train, val) whole episodes; no episode is in both.

    round(val_fraction * len) episodes go to val, at least one when val_fraction > 0 and there are
    two or more episodes, and never all of them. Both lists keep the original episode order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(episodes)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    val_ids = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [e for i, e in enumerate(episodes) if i not in val_ids]
    val = [e for i, e in enumerate(episodes) if i in val_ids]
    return train, val


class ClipDataset(Dataset):
    """Every window of `clip_len` consecutive frames inside one episode (never across episodes).

    Item: {"frames": (T, ...) tensor in the stored dtype, "actions": (T,) int64 (the action that
    produced each frame, NULL_ACTION = n_actions at an episode's first frame), "rewards": (T,)
    float32, "terminations": (T,) bool, "episode": int, "start": int (index of the first frame)},
    plus "event_cells": (T, E) int64 when the episodes carry entity labels (infos["event_cells"]).
    Frames stay as the episodes' numpy arrays; only a window is copied per item.
    """

    def __init__(self, episodes: list[Episode], clip_len: int, n_actions: int):
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        self.episodes = episodes
        self.clip_len = clip_len
        self.n_actions = n_actions
        self.frame_actions = [e.frame_actions(n_actions) for e in episodes]
        self.frame_rewards = [e.frame_rewards() for e in episodes]
        self.frame_terminations = [e.frame_terminations() for e in episodes]
        starts = [np.arange(len(e) - clip_len + 1) for e in episodes]
        self.window_episode = np.concatenate(
            [np.full(len(s), i, dtype=np.int64) for i, s in enumerate(starts)] or [np.zeros(0, np.int64)])
        self.window_start = np.concatenate(starts or [np.zeros(0, np.int64)]).astype(np.int64)
        if len(self.window_start) == 0:
            longest = max((len(e) for e in episodes), default=0)
            raise ValueError(f"no window of {clip_len} frames: {len(episodes)} episodes, "
                             f"the longest has {longest} frames")

    def __len__(self) -> int:
        return len(self.window_start)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        episode, start = int(self.window_episode[index]), int(self.window_start[index])
        window = slice(start, start + self.clip_len)
        return {
            "frames": torch.from_numpy(self.episodes[episode].frames[window].copy()),                    # (T, ...)
            "actions": torch.from_numpy(self.frame_actions[episode][window].copy()),                 # (T,)
            "rewards": torch.from_numpy(self.frame_rewards[episode][window].copy()),                 # (T,)
            "terminations": torch.from_numpy(self.frame_terminations[episode][window].copy()),       # (T,)
            "episode": episode,
            "start": start,
            **({"event_cells": torch.from_numpy(self.episodes[episode].infos["event_cells"][window].copy())}   # (T, E)
               if "event_cells" in self.episodes[episode].infos else {}),
        }


def sample_batch(dataset: ClipDataset, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`batch_size` windows drawn uniformly (with replacement) with `generator`, stacked to (B, T, ...);
    "episode" and "start" become (B,) int64 tensors."""
    picks = torch.randint(len(dataset), (batch_size,), generator=generator).tolist()
    items = [dataset[i] for i in picks]
    keys = ("frames", "actions", "rewards", "terminations") + (("event_cells",) if "event_cells" in items[0] else ())
    batch = {key: torch.stack([item[key] for item in items]) for key in keys}
    batch["episode"] = torch.tensor([item["episode"] for item in items], dtype=torch.int64)
    batch["start"] = torch.tensor([item["start"] for item in items], dtype=torch.int64)
    return batch
