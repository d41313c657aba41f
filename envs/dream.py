"""The batched dreaming core behind WorldModelEnv (batch 1) and WorldModelVectorEnv (batch N).

Owns a loaded world model, one KV cache with a row per environment, a seeded noise stream per
row (`worldmodel.noise.RowNoise`: N rows reproduce N single envs), and the per-row start contexts.
`step` is one call of `worldmodel.rollout.next_chunk` — the same code Self Forcing trains — plus
decoding to uint8. On a CUDA device that whole step (events, denoising, cache write, decoding) is
captured once per denoising-step count as a CUDA graph and replayed: a frame of this small model is
hundreds of tiny kernels, and replaying them saves their launch costs; the eager step is the reference
(`cuda_graph=False`). `compile=True` runs the device step through torch.compile (on CPU too). Knows no
Gymnasium API (the env classes own spaces, validation and episode bookkeeping).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import worldmodel
from worldmodel.flow import sigma_schedule
from worldmodel.noise import RowNoise
from worldmodel.rollout import new_cache, next_chunk, prime

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "coinchase"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# dtype="auto" picks per batch: bfloat16 from this many rows on a CPU with native bf16 matmuls, float32 otherwise;
# bf16 loses at batch 1 and wins from here on (docs/bench/README.md "DiT dtype per batch size"); CUDA keeps float32.
AUTO_BF16_MIN_ROWS = 16
# Inductor options of compile=True on the CPU: the compiled graph is called from C++, not Python, which saves
# most of a small frame's Python overhead (docs/bench/README.md "Compiled path").
CPU_COMPILE_OPTIONS = {"cpp_wrapper": True}


def pick_dtype(dtype: str, device: torch.device, rows: int) -> str:
    """The DiT dtype a DreamCore runs: `dtype` itself, or for "auto" the faster one for this batch size."""
    if dtype == "auto":
        native_bf16 = device.type == "cpu" and torch.backends.mkldnn.is_available() and \
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bfloat16" if native_bf16 and rows >= AUTO_BF16_MIN_ROWS else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or 'auto', got {dtype!r}")
    return dtype


@dataclass
class DreamStep:
    frames: np.ndarray        # (B, H, W, 3) uint8
    rewards: np.ndarray       # (B,) float
    terminations: np.ndarray  # (B,) float probability that the episode ended
    step_ms: float            # wall time of the whole batched step


class DreamCore:
    """N dreamed environments sharing one batched forward."""

    def __init__(self, checkpoint: str | Path | None, num_envs: int, device: str = "cpu", dtype: str = "auto",
                 denoise_steps: int | None = None, cuda_graph: bool = True, compile: bool = False):
        dtype = pick_dtype(dtype, torch.device(device), num_envs)
        path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        self.model = worldmodel.load(path, device)
        if self.model.dit is None:
            raise worldmodel.CheckpointError(f"{path} holds only an autoencoder; "
                                             "a dreamed env needs a DiT stage checkpoint")
        if not self.model.dit.config.causal:
            raise worldmodel.CheckpointError(f"{path} holds a bidirectional teacher; "
                                             "a dreamed env needs a causal model")
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
        self.noise = RowNoise(num_envs, self.device, self.dtype)
        self.bank_cache = new_cache(self.dit, self.bank_size, self.device, self.dtype)   # primed bank contexts (memo)
        self._bank_primed = np.zeros(self.bank_size, dtype=bool)
        self.cuda_graph = cuda_graph and self.device.type == "cuda"   # replay the step as a CUDA graph
        self._graphs: dict[int, _GraphedStep] = {}                    # denoising steps -> captured step
        # torch.compile of the device step (fuses its elementwise chains): minutes of compiling at the first step of
        # each denoising-step count, then faster frames (docs/bench/README.md "Compiled path"); off by default. On the
        # CPU the graph is called from C++ (CPU_COMPILE_OPTIONS).
        # Every core, batch size and step count is its own compiled graph: allow more than dynamo's default 8.
        if compile:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        options = CPU_COMPILE_OPTIONS if self.device.type == "cpu" else None
        self._device_step = torch.compile(self._dream, dynamic=False, options=options) if compile else self._dream
        self._actions = torch.zeros(num_envs, 1, dtype=torch.int64, device=self.device)   # (B, 1) the step's input

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
    @torch.inference_mode()
    def reset_rows(self, rows: np.ndarray, seeds: list[int], frames: np.ndarray, actions: np.ndarray,
                   bank_indices: np.ndarray | None = None) -> np.ndarray:
        """Prime the given rows with real context frames (R, T, H, W, 3) uint8 and actions (R, T).

        bank_indices (R,): which start-bank entry each row's context is (-1: not from the bank). A bank context
        is primed once and memoised (`self.bank_cache`, one cache row per bank entry): later resets to it copy
        that row's cache state instead of running the model over the context again — the same state, since
        priming is deterministic. This is what makes an RL vector env's autoresets cheap.
        Returns the last context frame of each row as the first observation (R, H, W, 3)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(seeds) != len(rows):
            raise ValueError(f"{len(seeds)} seeds for {len(rows)} rows")
        self.noise.seed(rows, seeds)
        index = np.full(len(rows), -1) if bank_indices is None else np.asarray(bank_indices)
        fresh = index < 0
        if fresh.any():
            self._prime(self.cache, rows[fresh], frames[fresh], actions[fresh])
        if not fresh.all():
            banked = np.flatnonzero(~fresh)
            wanted, first = np.unique(index[banked], return_index=True)   # each bank entry once, where first asked
            missing = ~self._bank_primed[wanted]
            if missing.any():
                at = banked[first[missing]]
                self._prime(self.bank_cache, wanted[missing], frames[at], actions[at])
                self._bank_primed[wanted[missing]] = True
            self.cache.copy_rows(rows[banked], self.bank_cache, index[banked])
        return frames[:, -1]

    def _prime(self, cache, rows: np.ndarray, frames: np.ndarray, actions: np.ndarray) -> None:
        r, t = actions.shape
        latents = self.autoencoder.encode(torch.from_numpy(frames.reshape(r * t, *frames.shape[2:])).to(self.device))
        latents = latents.view(r, t, *latents.shape[1:]).to(self.dtype)                    # (R, T, C, h, w)
        prime(self.dit, cache, latents, torch.from_numpy(actions).to(self.device), rows)

    @torch.inference_mode()
    def step(self, actions: np.ndarray) -> DreamStep:
        """Advance every row by one frame under actions (B,) int."""
        start = time.perf_counter()
        self._actions.copy_(torch.from_numpy(np.asarray(actions, dtype=np.int64))[:, None])
        if not self.cuda_graph:
            frames, rewards, terminations = self._device_step()
        else:
            if self._steps not in self._graphs:
                self._graphs[self._steps] = _GraphedStep(self._device_step)
            frames, rewards, terminations = self._graphs[self._steps].replay()
        return DreamStep(frames.cpu().numpy(), rewards.cpu().numpy(), terminations.cpu().numpy(),
                         (time.perf_counter() - start) * 1e3)

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Within the block, steps run eager PyTorch operators (no graph replay, no compiled code): what an
        operator-level tool such as torch's FlopCounterMode needs to see."""
        saved = self.cuda_graph, self._device_step
        self.cuda_graph, self._device_step = False, self._dream
        try:
            yield
        finally:
            self.cuda_graph, self._device_step = saved

    def _dream(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step on the device, from self._actions: frames (B, H, W, 3) uint8, rewards (B,), termination
        probabilities (B,). Device work only (no host copies), so it can be captured as a CUDA graph."""
        result = next_chunk(self.dit, self.cache, self._actions, self._sigmas, self.noise.source(),
                            event_min_prob=self.sampler.event_min_prob)
        frames = self.autoencoder.decode(result.latents[:, 0].float())
        if result.score is not None and self.dit.score_bar.bar_pixels:     # the score bar draws its own pixels
            frames = self.dit.score_bar.draw(frames, result.score[:, 0])
        return frames, result.reward[:, 0].float(), torch.sigmoid(result.termination[:, 0].float())

    def start_context(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Bank entry `index`: frames (T, H, W, 3) uint8, actions (T,) int64."""
        return self.model.start_frames[index].numpy(), self.model.start_actions[index].numpy()


class _GraphedStep:
    """A device step captured as a CUDA graph on its first call, replayed after. The step must read its inputs
    from, and keep its state in, tensors that outlive the graph (the cache, the noise counters, the action
    buffer): a replay re-runs the same kernels on the same memory. The first call runs the step eagerly
    (warming up lazy initialisation outside the capture), then captures; capturing runs nothing, so the
    state is advanced once per call, as in the eager path."""

    def __init__(self, step):
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[torch.Tensor, ...] = ()

    def replay(self) -> tuple[torch.Tensor, ...]:
        if self.graph is None:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                eager = self.step()                  # this call's frame
            torch.cuda.current_stream().wait_stream(stream)
            eager = tuple(t.clone() for t in eager)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = self.step()
            return eager
        self.graph.replay()
        return self.outputs
