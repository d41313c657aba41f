"""The batched dreaming core behind WorldModelEnv (batch 1) and WorldModelVectorEnv (batch N).

Owns a loaded world model, one KV cache with a row per environment, a torch noise generator per
row (so N rows reproduce N single envs), and the per-row start contexts. `step` is one call of
`worldmodel.rollout.next_chunk` — the same code Self Forcing trains — plus decoding to uint8.
Knows no Gymnasium API (the env classes own spaces, validation and episode bookkeeping).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import worldmodel
from worldmodel.flow import sigma_schedule
from worldmodel.rollout import new_cache, next_chunk, prime

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "coinchase"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class DreamStep:
    frames: np.ndarray        # (B, H, W, 3) uint8
    rewards: np.ndarray       # (B,) float
    terminations: np.ndarray  # (B,) float probability that the episode ended
    step_ms: float            # wall time of the whole batched step


class DreamCore:
    """N dreamed environments sharing one batched forward."""

    def __init__(self, checkpoint: str | Path | None, num_envs: int, device: str = "cpu", dtype: str = "float32",
                 denoise_steps: int | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        self.model = worldmodel.load(path, device)
        if self.model.dit is None:
            raise worldmodel.CheckpointError(f"{path} holds only an autoencoder; a dreamed env needs a DiT stage checkpoint")
        if not self.model.dit.config.causal:
            raise worldmodel.CheckpointError(f"{path} holds a bidirectional teacher; a dreamed env needs a causal model")
        if self.model.dit.config.chunk != 1:
            raise worldmodel.CheckpointError(f"{path} generates chunks of {self.model.dit.config.chunk} frames; "
                                             "an interactive env needs a frame-wise (chunk=1) model")
        if self.model.start_frames is None:
            raise worldmodel.CheckpointError(f"{path} has no start_frames.safetensors bank for resets")
        self.path, self.device, self.dtype = path, torch.device(device), DTYPES[dtype]
        self.num_envs = num_envs
        self.dit = self.model.dit.to(self.dtype)
        self.autoencoder = self.model.autoencoder
        self.sampler = self.model.config.sampler
        self.denoise_steps = denoise_steps or self.sampler.steps
        self.cache = new_cache(self.dit, num_envs, self.device, self.dtype)
        self.generators = [torch.Generator(device=self.device) for _ in range(num_envs)]

    # ------------------------------------------------------------------ facts from the checkpoint
    @property
    def n_actions(self) -> int:
        return self.dit.config.n_actions

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        size = self.model.config.autoencoder.frame_size
        return (size, size, 3)

    @property
    def bank_size(self) -> int:
        return len(self.model.start_frames)

    @property
    def denoise_steps(self) -> int:
        return self._steps

    @denoise_steps.setter
    def denoise_steps(self, steps: int) -> None:
        self._sigmas = sigma_schedule(int(steps), self.sampler.shift, self.sampler.max_steps)   # validates 1..max
        self._steps = int(steps)

    # ------------------------------------------------------------------ dreaming
    def _noise(self, rows: np.ndarray):
        def sample(shape: tuple[int, ...]) -> torch.Tensor:
            parts = [torch.randn(shape[1:], generator=self.generators[r], device=self.device) for r in rows]
            return torch.stack(parts).to(self.dtype)
        return sample

    @torch.inference_mode()
    def reset_rows(self, rows: np.ndarray, seeds: list[int], frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Prime the given rows with real context frames (R, T, H, W, 3) uint8 and actions (R, T).

        Returns the last context frame of each row as the first observation (R, H, W, 3)."""
        rows = np.asarray(rows, dtype=np.int64)
        for row, seed in zip(rows, seeds, strict=True):
            self.generators[row].manual_seed(int(seed))
        r, t = actions.shape
        latents = self.autoencoder.encode(torch.from_numpy(frames.reshape(r * t, *frames.shape[2:])).to(self.device))
        latents = latents.view(r, t, *latents.shape[1:]).to(self.dtype)                    # (R, T, C, h, w)
        prime(self.dit, self.cache, latents, torch.from_numpy(actions).to(self.device), rows,
              self.sampler.context_sigma, self._noise(rows))
        return frames[:, -1]

    @torch.inference_mode()
    def step(self, actions: np.ndarray) -> DreamStep:
        """Advance every row by one frame under actions (B,) int."""
        start = time.perf_counter()
        rows = np.arange(self.num_envs)
        result = next_chunk(self.dit, self.cache, torch.from_numpy(actions.astype(np.int64)).to(self.device)[:, None],
                            self._sigmas, self._noise(rows), context_sigma=self.sampler.context_sigma,
                            solver=self.sampler.solver, event_min_prob=self.sampler.event_min_prob)
        frames = self.autoencoder.decode(result.latents[:, 0].float()).cpu().numpy()
        rewards = result.reward[:, 0].float().cpu().numpy()
        terminations = torch.sigmoid(result.termination[:, 0].float()).cpu().numpy()
        return DreamStep(frames, rewards, terminations, (time.perf_counter() - start) * 1e3)

    def start_context(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Bank entry `index`: frames (T, H, W, 3) uint8, actions (T,) int64."""
        return self.model.start_frames[index].numpy(), self.model.start_actions[index].numpy()
