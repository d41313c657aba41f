"""On CUDA the env step is replayed as a captured graph; it must dream exactly what the eager step dreams.

Skipped without a GPU (CI has none); run on a lent GPU: `python -m pytest tests/test_cuda_graph.py`."""
import numpy as np
import pytest
import torch

from envs.dream import DreamCore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _primed(cuda_graph: bool, rows: int = 4) -> DreamCore:
    core = DreamCore(None, rows, "cuda", denoise_steps=4, cuda_graph=cuda_graph)
    starts = [core.start_context(r % core.bank_size) for r in range(rows)]
    core.reset_rows(np.arange(rows), list(range(rows)), np.stack([s[0] for s in starts]),
                    np.stack([s[1] for s in starts]))
    return core


def test_graph_replay_dreams_the_eager_frames_across_resets_and_step_counts():
    eager, graphed = _primed(False), _primed(True)
    rng = np.random.default_rng(0)
    for t in range(12):
        if t == 6:   # re-prime one row mid-run: the graph must read the reset cache in place
            frames, actions = eager.start_context(3)
            for core in (eager, graphed):
                core.reset_rows(np.array([2]), [99], frames[None], actions[None])
        if t == 9:
            eager.denoise_steps = graphed.denoise_steps = 2
        actions = rng.integers(eager.n_actions, size=4)
        a, b = eager.step(actions), graphed.step(actions)
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1, f"frames differ at step {t}"
        np.testing.assert_allclose(a.rewards, b.rewards, atol=1e-4)
        np.testing.assert_allclose(a.terminations, b.terminations, atol=1e-4)
