"""The Triton kernels equal the PyTorch path they replace (worldmodel/kernels/, switched on by `kernels.enable`).

The kernels run in triton's CPU interpreter, which reads TRITON_INTERPRET=1 when triton is
imported. So that the variable never reaches the other test modules (pytest runs them all in one
process), this module runs itself as a script in one subprocess with the variable set: the
`check_*` functions below run there, fp32, small shapes, and report; each `test_*` reads its
check's report. Skipped when triton is not installed (it is the optional extra `dreamgym[triton]`).

Shapes: B batch, H heads, F cache slots, N tokens per frame, T frames per chunk, Dh head width.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worldmodel import kernels
from worldmodel.blocks import CacheAccess, FrameAttention, attention_plan, gate_frames, modulate_frames
from worldmodel.dit import DiT
from worldmodel.kv_cache import KVCache

HAS_TRITON = importlib.util.find_spec("triton") is not None
ATOL = RTOL = 1e-5   # fp32
REPORT_PREFIX = "TRITON_CHECKS "


# ------------------------------------------------------------------ checks (run under TRITON_INTERPRET=1)
@contextmanager
def _switched_on() -> Iterator[Counter]:
    """The kernels switched on for the block, counting the kernel calls the model makes (so a check cannot
    pass by running PyTorch twice)."""
    from worldmodel.kernels import adaln, attention  # noqa: PLC0415

    calls: Counter = Counter()
    originals = {(module, name): getattr(module, name) for module, name in [
        (attention, "cached_attention"), (adaln, "norm_modulate"), (adaln, "gate_residual"),
        (adaln, "gate_residual_norm_modulate")]}

    def counted(name: str, kernel: Callable) -> Callable:
        def call(*args, **kwargs):
            calls[name] += 1
            return kernel(*args, **kwargs)
        return call

    for (module, name), kernel in originals.items():
        setattr(module, name, counted(name, kernel))
    previous = kernels.enabled()
    kernels.enable(True)
    try:
        yield calls
    finally:
        kernels.enable(previous)
        for (module, name), kernel in originals.items():
            setattr(module, name, kernel)


def _off_and_on(run: Callable[[], tuple]) -> tuple[tuple, tuple, Counter]:
    """run() with the kernels off, then on; both results and the kernel calls of the second."""
    off = run()
    with _switched_on() as calls:
        on = run()
    return off, on, calls


def _assert_all_close(on: tuple, off: tuple) -> float:
    for got, want in zip(on, off, strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    return max(float((got - want).abs().max()) for got, want in zip(on, off, strict=True))


def _ring_cache(batch: int, heads: int, head_dim: int, n: int, window: int, sink: int, seen: list[int]) -> KVCache:
    """A cache whose row i has seen `seen[i]` frames (so some rows wrap, some are partly filled), every slot
    holding random keys / values: an empty slot's garbage must stay hidden."""
    cache = KVCache(batch, 1, heads, head_dim, n, window, sink)
    g = torch.Generator().manual_seed(0)
    cache.layers[0].k.copy_(torch.randn(cache.layers[0].k.shape, generator=g))
    cache.layers[0].v.copy_(torch.randn(cache.layers[0].v.shape, generator=g))
    for row, frames in enumerate(seen):
        for _ in range(frames):
            cache.advance(np.array([row]), 1)
    return cache


def _access(cache: KVCache, rows: np.ndarray, frames: int, write: bool) -> tuple[CacheAccess, torch.Tensor]:
    """What worldmodel.rollout.cache_access builds, without a model."""
    base = cache.sink + cache.window
    valid, distance = cache.visible(rows, cache.frames_seen[rows])                   # (R, F) each
    write_slots = cache.slot_for(cache.advance(rows, frames)) if write else None
    access = CacheAccess(layers=cache.layers, rows=torch.as_tensor(rows), valid=valid,
                         positions=(base - distance).clamp_min(0), write_slots=write_slots,
                         all_rows=len(rows) == cache.batch and bool((rows == np.arange(cache.batch)).all()))
    return access, torch.arange(base, base + frames)


def _attention_case(heads: int, head_dim: int, side: int, chunk: int, rows: list[int], seen: list[int],
                    frame_mask: torch.Tensor | None, spatial: bool) -> float:
    """The kernel vs the PyTorch cache branch (rotate cached keys, concatenate, SDPA under the plan's mask)."""
    from worldmodel.kernels.attention import cached_attention  # noqa: PLC0415

    n, b = side * side, len(rows)
    cache = _ring_cache(len(seen), heads, head_dim, n, window=3, sink=1, seen=seen)
    access, positions = _access(cache, np.array(rows), chunk, write=False)
    assert (~access.valid).any() and access.valid.any(), "the case must mix visible and hidden slots"
    cells = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    plan = attention_plan(b, chunk, n, frame_mask, positions, access, cells if spatial else None, head_dim,
                          100.0, 10.0, torch.float32)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, heads, chunk * n, head_dim, generator=g) for _ in range(3))   # (B, H, T*N, Dh)
    q_rot, k_rot = plan.own.apply(q), plan.own.apply(k)
    cached_k, cached_v = cache.layers[0].read(access.rows)                                # (B, H, F*N, Dh)
    keys = torch.cat([plan.cached.apply(cached_k), k_rot], dim=2)
    reference = F.scaled_dot_product_attention(q_rot, keys, torch.cat([cached_v, v], dim=2), attn_mask=plan.mask)
    out = cached_attention(q_rot, k_rot, v, cache.layers[0].k, cache.layers[0].v, access.rows, access.valid,
                           plan.cached.cos, plan.cached.sin, plan.own_mask)                # (B, H, T*N, Dh)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=RTOL)
    return float((out - reference).abs().max())


def check_attention_over_a_wrapped_partly_filled_cache() -> float:
    """Rows [2, 0] of a 3-row cache: row 0 wrapped twice, row 2 holds 2 frames (empty slots); chunk of 2
    frames with a causal own mask; 3 heads of width 12 (rotary pairs padded to the block); spatial rotary."""
    causal = torch.tril(torch.ones(2, 2, dtype=torch.bool))
    return _attention_case(heads=3, head_dim=12, side=2, chunk=2, rows=[2, 0], seen=[9, 5, 2],
                           frame_mask=causal, spatial=True)


def check_attention_frame_wise_time_only_rotary() -> float:
    """All rows in order, chunk 1, no own mask, 2 heads of width 16, time-only rotary, 16 tokens per frame."""
    return _attention_case(heads=2, head_dim=16, side=4, chunk=1, rows=[0, 1], seen=[6, 1],
                           frame_mask=None, spatial=False)


def check_attention_layer_reads_before_it_writes() -> float:
    """FrameAttention with a write pass: the same output and the same cache with the kernel as without,
    though the chunk overwrites a slot it still sees (the oldest ring frame)."""
    torch.manual_seed(0)
    layer = FrameAttention(dim=24, heads=3).eval()
    cells = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(2), indexing="ij"), -1).reshape(-1, 2)
    x = torch.randn(2, 2 * 4, 24)                                                         # (B, T*N, D)

    def run() -> tuple:
        cache = _ring_cache(2, 3, 8, 4, window=3, sink=1, seen=[7, 3])
        access, positions = _access(cache, np.arange(2), 2, write=True)
        plan = attention_plan(2, 2, 4, None, positions, access, cells, 8, 100.0, 10.0, torch.float32)
        with torch.no_grad():
            return layer(x, 2, plan, access, 0), cache.layers[0].k, cache.layers[0].v

    off, on, calls = _off_and_on(run)
    assert calls["cached_attention"] == 1, calls
    assert torch.equal(on[1], off[1]) and torch.equal(on[2], off[2]), "the kernel path wrote a different cache"
    return _assert_all_close(on, off)


def check_adaln_kernels_match_modulate_and_gate() -> float:
    """norm_modulate, gate_residual and the fused pair equal layer_norm + modulate_frames / x + gate_frames,
    each token modulated by its own frame's row (B=2, T=3 frames of N=5 tokens, D=20, chunks of one ada output)."""
    from worldmodel.kernels.adaln import gate_residual, gate_residual_norm_modulate, norm_modulate  # noqa: PLC0415

    g = torch.Generator().manual_seed(2)
    b, t, n, d, eps = 2, 3, 5, 20, 1e-6
    x, y = torch.randn(b, t * n, d, generator=g), torch.randn(b, t * n, d, generator=g)          # (B, T*N, D)
    shift, scale, gate = torch.randn(b, t, 3 * d, generator=g).chunk(3, dim=-1)                 # 3 x (B, T, D)
    inputs, worst = (x.clone(), y.clone()), 0.0
    for got, want in [
        (norm_modulate(x, shift, scale, eps), modulate_frames(F.layer_norm(x, (d,), eps=eps), shift, scale, t)),
        (gate_residual(x, y, gate), x + gate_frames(y, gate, t)),
        *zip(gate_residual_norm_modulate(x, y, gate, shift, scale, eps),
             (x + gate_frames(y, gate, t),
              modulate_frames(F.layer_norm(x + gate_frames(y, gate, t), (d,), eps=eps), shift, scale, t)),
             strict=True),
    ]:
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
        worst = max(worst, float((got - want).abs().max()))
    assert torch.equal(x, inputs[0]) and torch.equal(y, inputs[1]), "a kernel wrote into its input"
    return worst


def _perturbed(**overrides) -> DiT:
    from conftest import perturbed_dit      # tests/ is on sys.path in pytest and in this file's subprocess
    return perturbed_dit(**overrides)


def check_rollout_over_a_wrapping_cache_matches() -> float:
    """worldmodel.rollout with the kernels on == off: a 4-head DiT, chunks of 2, sink 1 + window 2, batch 2,
    primed with 2 chunks then 3 generated chunks (the ring wraps), 2 denoising steps each."""
    from worldmodel.rollout import new_cache, prime, unroll  # noqa: PLC0415

    model = _perturbed(heads=4, chunk=2, window=2, sink=1)
    g = torch.Generator().manual_seed(3)
    context, actions = torch.randn(2, 4, 4, 4, 4, generator=g), torch.randint(0, 5, (2, 10), generator=g)

    def run() -> tuple:
        cache, noise_g = new_cache(model, batch=2), torch.Generator().manual_seed(4)
        with torch.no_grad():
            primed = prime(model, cache, context, actions[:, :4])
            result = unroll(model, cache, actions[:, 4:], [1.0, 0.5],
                            lambda shape: torch.randn(shape, generator=noise_g))
        return primed.reward, result.latents, result.reward, cache.layers[-1].k            # latents (B, 6, C, h, w)

    off, on, calls = _off_and_on(run)
    forwards, depth = 2 + 3 * 3, model.config.depth                  # 2 primed chunks, 3 chunks x (2 steps + write)
    assert calls["cached_attention"] == forwards * depth and calls["gate_residual"] == forwards * depth, calls
    assert calls["norm_modulate"] == forwards * (depth + 1), calls  # + the output norm
    return _assert_all_close(on, off)


def check_dream_env_step_gives_the_same_frames(checkpoint: str) -> float:
    """WorldModelEnv on the untrained checkpoint (weights perturbed so every block acts): reset + 3 steps give
    the same uint8 frames with the kernels on as off."""
    from envs.world_model_env import WorldModelEnv  # noqa: PLC0415

    env = WorldModelEnv(checkpoint)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in env.core.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def run() -> tuple:
        frames = [env.reset(seed=0)[0]] + [env.step(a)[0] for a in (4, 1, 0)]
        return (torch.from_numpy(np.stack(frames)),)                                    # (4, 64, 64, 3) uint8

    off, on, calls = _off_and_on(run)
    assert calls["cached_attention"] > 0 and calls["gate_residual_norm_modulate"] > 0, calls
    assert torch.equal(on[0], off[0]), f"{int((on[0] != off[0]).sum())} pixel channels differ"
    return 0.0


def run_checks(checkpoint: str) -> dict[str, dict]:
    """Every check, each timed; a failure is reported, not raised, so the others still run."""
    report = {}
    for name, check in sorted(globals().items()):
        if not name.startswith("check_"):
            continue
        start = time.perf_counter()
        try:
            worst = check(checkpoint) if check.__code__.co_argcount else check()
            report[name] = {"ok": True, "max_abs_diff": worst}
        except Exception:  # noqa: BLE001  (reported to the test that reads this check)
            report[name] = {"ok": False, "error": traceback.format_exc()}
        report[name]["seconds"] = round(time.perf_counter() - start, 2)
    return report


# ------------------------------------------------------------------ tests (the pytest process; triton not imported)
@pytest.fixture(scope="module")
def interpreter_report(untrained_checkpoint) -> dict[str, dict]:
    """Run every check once, in a subprocess with TRITON_INTERPRET=1 and one thread."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "DREAMGYM_TRITON": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, str(untrained_checkpoint)], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    assert done.returncode == 0 and lines, f"the interpreter run failed (rc {done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads(lines[-1][len(REPORT_PREFIX):])


CHECKS = sorted(name for name in globals() if name.startswith("check_"))


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'dreamgym[triton]')")
@pytest.mark.parametrize("check", CHECKS)
def test_triton_kernel_equals_the_pytorch_path(check, interpreter_report):
    result = interpreter_report[check]
    assert result["ok"], f"{check} ({result['seconds']} s):\n{result['error']}"


def test_the_switch_needs_cuda_or_the_interpreter_and_grad_mode_off(monkeypatch):
    """On a CPU tensor outside the interpreter, or with grad mode on, PyTorch runs even with the switch on."""
    x = torch.zeros(1, 2, 4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    previous = kernels.enabled()
    kernels.enable(True)
    try:
        with torch.no_grad():
            assert not kernels.active(x)                        # CPU tensor, no interpreter
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert not kernels.active(x)                            # grad mode on: the kernels have no backward
    finally:
        kernels.enable(previous)


NO_TRITON = """
import os, sys
sys.modules["triton"] = None                     # any `import triton` now raises ImportError
os.environ["TRITON_INTERPRET"] = "1"
import torch
from worldmodel import kernels
from worldmodel.config import dit_preset
from worldmodel.dit import DiT
from worldmodel.rollout import new_cache, next_chunk, prime
assert not kernels.enabled(), "the switch is off by default"
kernels.enable(True)
model = DiT(dit_preset("tiny", latent_channels=4, latent_size=4, patch=1)).eval()
cache = new_cache(model, batch=1)
with torch.no_grad():
    assert not kernels.active(torch.zeros(1))
    prime(model, cache, torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, dtype=torch.long))
    next_chunk(model, cache, torch.zeros(1, 1, dtype=torch.long), [1.0], torch.randn)
"""


def test_the_model_imports_and_runs_without_triton():
    """Triton is an optional extra: without it the switch falls back to PyTorch and the rollout runs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DREAMGYM_TRITON", None)
    done = subprocess.run([sys.executable, "-c", NO_TRITON], cwd=Path(__file__).resolve().parents[1],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run the checks under TRITON_INTERPRET=1 (see the docstring)"
    torch.set_num_threads(1)
    print(REPORT_PREFIX + json.dumps(run_checks(sys.argv[1])))
