"""Optional Triton kernels for the DiT's inference path, behind one runtime switch (off by default).

Owns the switch and the test of when a kernel may run; the kernels live beside it:
`attention` (one denoising step's attention over the ring-buffer KV cache, read in place) and
`adaln` (LayerNorm + adaLN modulate, and gate + residual, fused). The PyTorch path in
worldmodel/dit.py is the reference and the default; the switch changes no checkpoint or config.

Turn it on with `worldmodel.kernels.enable(True)` or the environment variable `DREAMGYM_TRITON=1`
(read once, at import). A kernel then runs only when all of these hold, otherwise PyTorch runs:
- triton imports (it is the optional extra `dreamgym[triton]`; this module never needs it);
- the tensors are on CUDA, or `TRITON_INTERPRET=1` is set and they are on the CPU (triton's
  interpreter: slow, for tests);
- grad mode is off (`torch.no_grad()` / `torch.inference_mode()`, as in the rollout's no-grad steps and the
  env): the kernels have no backward, so Self Forcing's exit step with gradients keeps PyTorch.
"""
from __future__ import annotations

import functools
import importlib
import os

import torch

_enabled = os.environ.get("DREAMGYM_TRITON", "0") == "1"


def enable(on: bool = True) -> None:
    """Switch the Triton kernels on or off for this process (they still run only where `active` says)."""
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled


@functools.cache
def available() -> bool:
    """Whether triton imports (checked once per process)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def active(x: torch.Tensor) -> bool:
    """Whether the kernels run for activations x: switch on, grad mode off, x on CUDA (or on the CPU
    under the interpreter), triton present."""
    if not _enabled or torch.is_grad_enabled():
        return False
    on_device = x.is_cuda or (x.device.type == "cpu" and interpreting())
    return on_device and available()
