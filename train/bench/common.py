"""What every section of the benchmark (train/bench/run.py) shares: its config and the measuring tools.

Owns `BenchConfig` (every knob of `python -m train.bench`, with the loop counts of the full run
and `QUICK_LOOPS`, the counts `quick=true` puts in their place), the device label printed beside
every absolute figure, process memory (RSS, or CUDA allocations), a peak-memory probe, device
synchronisation, and the measured matmul throughput that FLOP-bound limits and MFU divide by.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import os
import platform
import resource
import threading
import time
from dataclasses import dataclass, field

import torch

STAGES = ("teacher", "tf", "df", "ode_init", "self_forcing")


@dataclass
class BenchConfig:
    device: str = "cpu"                 # torch device of the model and training figures ("cuda" on a GPU)
    cuda_graph: bool = True             # on CUDA, the env step replays a captured CUDA graph (False: eager kernels)
    compile: bool = False               # torch.compile the env step (minutes of compiling per batch size first)
    matmul_precision: str = "highest"   # torch.set_float32_matmul_precision for the run: "high" lets CUDA run fp32
                                        #   matmuls as TF32 (the matmul throughput of the limits is measured so too)
    threads: int = 1                    # torch CPU threads, the peer's too (1 is stable on a shared machine)
    dtype: str = "auto"                 # DiT dtype of the env figures (envs.dream.pick_dtype: auto picks per
                                        #   batch size)
    quick: bool = False                 # replace the loop counts by QUICK_LOOPS (tiny models): < 60 s, for tests
    seed: int = 0
    markdown_path: str = "runs/bench/bench.md"
    json_path: str = "runs/bench/bench.json"
    # sections, each can be switched off
    game: bool = True
    model: bool = True
    peer: bool = True
    training: bool = True
    kernels: bool = True                # e. the Triton kernels vs the PyTorch path (figures on CUDA only)
    profile: bool = True                # f. per-operator profile of the env step (where batched time goes)
    # a. game
    env_id: str = ""                    # the real game timed (and without a checkpoint, the untrained model's);
                                        #   "" = the checkpoint's (its config env_id), else the bundled game
    game_steps: int = 20_000            # game steps timed single-threaded (goal >= 5,000 steps/s)
    record_steps: int = 5_000           # steps recorded through RecordMinari into a temp dir
    # b. model
    checkpoint: str | None = None       # causal frame-wise checkpoint dir of any game (sections b, c, f; a times its
                                        #   game); None = an untrained model of the bundled game (timings do not
    untrained_size: str = "small"       #   depend on weights) of this DiT preset
    untrained_widths: list[int] = field(default_factory=lambda: [32, 64, 128])   # its autoencoder widths
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])
    denoise_steps: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    warmup_frames: int = 3              # untimed steps before each timed point
    timed_frames: int = 20              # timed steps per (batch, denoise steps) point; the median is reported
    horizon: int = 10_000               # frames a batch-1 env is stepped for the long-horizon figure
    horizon_early: int = 100            # ... compared with this early frame
    horizon_window: int = 50            # frames averaged (median) ending at each of the two points
    env_denoise_steps: int = 4           # denoising steps of the long-horizon and VectorEnv figures
    vector_sizes: list[int] = field(default_factory=lambda: [16, 64])
    vector_frames: int = 10             # timed VectorEnv steps per size
    dtype_batches: list[int] = field(default_factory=lambda: [1, 16, 64])   # float32 vs bfloat16 timed at these
    matmul_size: int = 2048             # n of the timed n x n fp32 matmul
    matmul_repeats: int = 10
    # f. profile
    profile_batches: list[int] = field(default_factory=lambda: [1, 16, 64])
    profile_frames: int = 5             # profiled steps per batch size (after warmup_frames)
    profile_top: int = 12               # operators listed per batch size
    # c. peer
    peer_script: str = "../shared/peers/diamond_speed.py"   # relative to the repo root; needs env DIAMOND_SRC
    peer_steps: int = 3                 # denoising steps of the peer; ours are timed with as many
    peer_timeout_s: float = 900.0
    # d. training
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    train_size: str = "small"           # DiT preset of every stage (teacher, critic and student alike)
    train_batch: int = 8
    train_clip_frames: int = 8
    train_warmup_iters: int = 1
    train_iters: int = 3                # timed iterations per stage (self forcing: rounded up to whole critic cycles)
    critic_ratio: int = 5               # self forcing: critic updates per generator update
    critic_reuse: list[int] = field(default_factory=lambda: [1, 4])   # self forcing timed once per value (1 = paper)
    latent_channels: int = 8            # synthetic latents (C, h, w) the stages train on
    latent_size: int = 8

    def __post_init__(self) -> None:
        if 1 not in self.batch_sizes:
            raise ValueError(f"batch_sizes {self.batch_sizes} must include 1 (latency and the FLOP-bound figures)")
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
        if not self.critic_reuse or min(self.critic_reuse) < 1:
            raise ValueError(f"critic_reuse values must be >= 1, got {self.critic_reuse}")
        if not 0 < self.horizon_window <= self.horizon_early < self.horizon:
            raise ValueError(f"need 0 < horizon_window ({self.horizon_window}) <= horizon_early ({self.horizon_early}) "
                             f"< horizon ({self.horizon})")


# What quick=true puts in place of the full run's loop counts and model sizes.
QUICK_LOOPS = dict(game_steps=500, record_steps=200, untrained_size="tiny", untrained_widths=[8, 8, 8],
                   warmup_frames=1, timed_frames=2, horizon=60, horizon_early=20, horizon_window=10,
                   vector_frames=2, dtype_batches=[1, 2], profile_batches=[1, 2], profile_frames=1, matmul_size=256,
                   matmul_repeats=2, train_size="tiny", train_batch=2,
                   train_warmup_iters=1, train_iters=1, critic_ratio=2, critic_reuse=[1, 2])


def effective(cfg: BenchConfig) -> BenchConfig:
    """The config the run uses: `cfg`, with QUICK_LOOPS in place of the loop counts when `cfg.quick`."""
    return dataclasses.replace(cfg, **QUICK_LOOPS) if cfg.quick else cfg


def device_label(cfg: BenchConfig) -> str:
    """What every absolute figure was measured on, e.g. "cpu: AMD EPYC 7B13, 1 of 2 cores"."""
    if torch.device(cfg.device).type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(torch.device(cfg.device))}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            name = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores"


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def rss_mb() -> float:
    """Resident memory of this process now, MB (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def memory_mb(device: str) -> float:
    """Memory the figures track: CUDA allocations on a GPU, process RSS on CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated(torch.device(device)) / 1e6
    return rss_mb()


def release_free_memory(device: str) -> None:
    """Hand memory freed by Python and torch back to the OS (glibc malloc_trim; CUDA empty_cache), so that
    RSS measures what is in use, not what the allocator kept from earlier work."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        return
    libc = ctypes.util.find_library("c")
    if libc is not None:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):   # not glibc
            pass


def memory_in_use_mb(device: str) -> float:
    release_free_memory(device)
    return memory_mb(device)


class PeakMemory:
    """Peak memory above the level in use at entry, MB: `with PeakMemory(device) as peak: ...; peak.mb`.

    CUDA: torch.cuda.max_memory_allocated. CPU: process RSS sampled every `interval_s` by a thread
    (torch releases the GIL in its kernels, so the sampler runs during them), after freed memory
    was handed back to the OS at entry."""

    def __init__(self, device: str, interval_s: float = 0.002):
        self.device, self.interval_s = device, interval_s
        self.cuda = torch.device(device).type == "cuda"
        self.mb = 0.0

    def __enter__(self) -> PeakMemory:
        self.start = memory_in_use_mb(self.device)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
            return self
        self.peak, self.stop = self.start, threading.Event()

        def sample() -> None:
            while not self.stop.is_set():
                self.peak = max(self.peak, rss_mb())
                time.sleep(self.interval_s)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.mb = torch.cuda.max_memory_allocated(torch.device(self.device)) / 1e6 - self.start
            return
        self.stop.set()
        self.thread.join()
        self.mb = max(self.peak, rss_mb()) - self.start


def matmul_flops_per_s(cfg: BenchConfig) -> float:
    """Measured dense fp32 matmul throughput on cfg.device (FLOP/s): best of `matmul_repeats` n x n products."""
    n = cfg.matmul_size
    g = torch.Generator().manual_seed(cfg.seed)
    a, b = (torch.randn(n, n, generator=g).to(cfg.device) for _ in range(2))
    torch.matmul(a, b)
    sync(cfg.device)
    best = float("inf")
    for _ in range(cfg.matmul_repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(cfg.device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best
