"""The latent cache: a recorded dataset encoded once by the trained autoencoder.

Written by the autoencoder stage, read by every DiT stage so they never touch pixels. One
safetensors file holding all episodes back to back plus offsets, the train/val episode split, and
a bank of real start contexts (uint8 frames + actions) that checkpoints carry for env resets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from train.common.events import EVENTS_FILE, attach_events
from worldmodel.autoencoder import Autoencoder
from worldmodel.checkpoint import read_tensors, write_dir_atomically
from worldmodel.data import Episode

LATENTS_FILE = "latents.safetensors"


@dataclass
class LatentData:
    train: list[Episode]         # frames are latents (n+1, C, h, w) float32
    val: list[Episode]
    n_actions: int
    start_frames: torch.Tensor   # (K, T, H, W, 3) uint8 real start contexts
    start_actions: torch.Tensor  # (K, T) int64, the action before each frame (null id first)
    event_entities: int = 0      # E: entities with per-frame cell labels (infos["event_cells"]), 0 = none


@torch.no_grad()
def encode_frames(autoencoder: Autoencoder, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 (n, H, W, 3) -> float32 latents (n, C, h, w)."""
    device = next(autoencoder.parameters()).device
    parts = [autoencoder.encode(torch.from_numpy(frames[i:i + batch]).to(device)).float().cpu().contiguous()
             for i in range(0, len(frames), batch)]
    return torch.cat(parts).numpy()


def start_bank(episodes: list[Episode], n_actions: int, context: int, size: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` real contexts of `context` frames from the start of episodes (what a reset shows first)."""
    eligible = [e for e in episodes if len(e.frames) >= context]
    if not eligible:
        raise ValueError(f"no episode has {context} frames for the start bank")
    rng = np.random.default_rng(seed)
    picks = [eligible[i] for i in rng.integers(len(eligible), size=size)]
    frames = np.stack([e.frames[:context] for e in picks])                                   # (K, T, H, W, 3)
    actions = np.stack([np.concatenate([[n_actions], e.actions[:context - 1]]) for e in picks])  # (K, T)
    return torch.from_numpy(frames), torch.from_numpy(actions.astype(np.int64))


def _pack(episodes: list[Episode], prefix: str) -> dict[str, torch.Tensor]:
    frame_offsets = np.cumsum([0] + [len(e.frames) for e in episodes])
    step_offsets = np.cumsum([0] + [len(e.actions) for e in episodes])
    return {
        f"{prefix}/latents": torch.from_numpy(np.concatenate([e.frames for e in episodes]).astype(np.float32)),
        f"{prefix}/actions": torch.from_numpy(np.concatenate([e.actions for e in episodes]).astype(np.int64)),
        f"{prefix}/rewards": torch.from_numpy(np.concatenate([e.rewards for e in episodes]).astype(np.float32)),
        f"{prefix}/terminations": torch.from_numpy(np.concatenate([e.terminations for e in episodes]).astype(np.bool_)),
        f"{prefix}/truncations": torch.from_numpy(np.concatenate([e.truncations for e in episodes]).astype(np.bool_)),
        f"{prefix}/frame_offsets": torch.from_numpy(frame_offsets.astype(np.int64)),
        f"{prefix}/step_offsets": torch.from_numpy(step_offsets.astype(np.int64)),
    }


def _unpack(tensors: dict[str, torch.Tensor], prefix: str) -> list[Episode]:
    f_off, s_off = tensors[f"{prefix}/frame_offsets"].numpy(), tensors[f"{prefix}/step_offsets"].numpy()
    get = {k: tensors[f"{prefix}/{k}"].numpy()
           for k in ("latents", "actions", "rewards", "terminations", "truncations")}
    return [Episode(frames=get["latents"][f_off[i]:f_off[i + 1]], actions=get["actions"][s_off[i]:s_off[i + 1]],
                    rewards=get["rewards"][s_off[i]:s_off[i + 1]],
                    terminations=get["terminations"][s_off[i]:s_off[i + 1]],
                    truncations=get["truncations"][s_off[i]:s_off[i + 1]], infos={})
            for i in range(len(f_off) - 1)]


def save_latents(directory: Path, autoencoder: Autoencoder, train: list[Episode], val: list[Episode], n_actions: int,
                 start_frames: torch.Tensor, start_actions: torch.Tensor, notes: dict[str, str] | None = None) -> None:
    """Encode train/val episodes and write directory/latents.safetensors atomically, with `notes` ({file name: text})
    written in the same atomic step."""
    def encoded(episodes: list[Episode]) -> list[Episode]:
        return [Episode(frames=encode_frames(autoencoder, e.frames), actions=e.actions, rewards=e.rewards,
                        terminations=e.terminations, truncations=e.truncations, infos={}) for e in episodes]

    tensors = {**_pack(encoded(train), "train"), **_pack(encoded(val), "val"),
               "n_actions": torch.tensor(n_actions), "start/frames": start_frames, "start/actions": start_actions}
    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / LATENTS_FILE))
        for name, text in (notes or {}).items():
            (tmp / name).write_text(text)

    write_dir_atomically(directory, fill)


def load_latents(directory: str | Path) -> LatentData:
    """Read the latent cache the autoencoder stage wrote, with its entity-event labels if it has them."""
    tensors = read_tensors(Path(directory) / LATENTS_FILE)
    data = LatentData(train=_unpack(tensors, "train"), val=_unpack(tensors, "val"), n_actions=int(tensors["n_actions"]),
                      start_frames=tensors["start/frames"], start_actions=tensors["start/actions"])
    if (Path(directory) / EVENTS_FILE).exists():
        events = read_tensors(Path(directory) / EVENTS_FILE)
        for split, episodes in (("train", data.train), ("val", data.val)):
            if episodes:
                extra = {k.split("/", 1)[1]: v for k, v in events.items()
                         if k.startswith(split + "/") and k != split + "/cells"}
                attach_events(episodes, events[f"{split}/cells"], **extra)
        data.event_entities = int(events["train/cells"].shape[1])
    return data
