"""The dreaming core: a bank context is primed once and later resets copy its cache state; the compiled step
dreams the eager frames; dtype "auto" keeps float32 at batch 1 and picks bfloat16 for large CPU batches."""
import numpy as np
import pytest
import torch

from envs.dream import AUTO_BF16_MIN_ROWS, DreamCore, pick_dtype
from worldmodel.kv_cache import KVCache


def test_copy_rows_makes_rows_hold_the_source_rows_state():
    source = KVCache(batch=2, layers=2, heads=1, head_dim=2, tokens_per_frame=1, window=3, latent_shape=(1, 2, 2))
    for layer in source.layers:
        layer.k.normal_(), layer.v.normal_()
    source.previous.normal_()
    source.advance(np.array([1]), 2)
    target = KVCache(batch=3, layers=2, heads=1, head_dim=2, tokens_per_frame=1, window=3, latent_shape=(1, 2, 2))
    target.copy_rows(np.array([0, 2]), source, np.array([1, 1]))
    for mine, theirs in zip(target.layers, source.layers, strict=True):
        assert torch.equal(mine.k[0], theirs.k[1]) and torch.equal(mine.v[2], theirs.v[1])
        assert not mine.k[1].any()
    assert torch.equal(target.previous[2], source.previous[1])
    assert target.frames_seen.tolist() == [2, 0, 2]
    assert torch.equal(target.slot_time[0], source.slot_time[1])


def _core(checkpoint, rows: int) -> DreamCore:
    return DreamCore(checkpoint, rows, "cpu", denoise_steps=2)


def test_a_bank_reset_restores_the_primed_state_without_running_the_model_again(untrained_checkpoint, monkeypatch):
    memo, plain = _core(untrained_checkpoint, 2), _core(untrained_checkpoint, 2)
    frames, actions = zip(*(memo.start_context(i) for i in (1, 1)))
    frames, actions = np.stack(frames), np.stack(actions)
    memo.reset_rows(np.arange(2), [5, 6], frames, actions, bank_indices=np.array([1, 1]))
    plain.reset_rows(np.arange(2), [5, 6], frames, actions)
    for mine, theirs in zip(memo.cache.layers, plain.cache.layers, strict=True):
        torch.testing.assert_close(mine.k, theirs.k, atol=1e-5, rtol=1e-5)
    assert torch.equal(memo.cache.slot_time, plain.cache.slot_time)
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions_now = rng.integers(memo.n_actions, size=2)
        a, b = memo.step(actions_now), plain.step(actions_now)
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
    calls = []
    monkeypatch.setattr(memo, "_prime", lambda *args: calls.append(args))
    memo.reset_rows(np.array([0]), [7], frames[:1], actions[:1], bank_indices=np.array([1]))
    assert calls == [], "a bank context already primed must be copied, not primed again"
    assert memo.cache.frames_seen.tolist()[0] == len(actions[0])


def _dream_alike(eager: DreamCore, compiled: DreamCore, frames: int = 3) -> None:
    """Prime both cores with the same bank contexts and seeds; they must dream the same frames and rewards."""
    contexts, actions = zip(*(eager.start_context(i) for i in (0, 1)))
    for core in (eager, compiled):
        core.reset_rows(np.arange(2), [1, 2], np.stack(contexts), np.stack(actions), bank_indices=np.array([0, 1]))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        actions_now = rng.integers(eager.n_actions, size=2)
        a, b = eager.step(actions_now), compiled.step(actions_now)
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
        np.testing.assert_allclose(a.rewards, b.rewards, atol=1e-4)


@pytest.mark.slow   # a torch.compile of the whole step: minutes on a CPU
def test_the_compiled_step_dreams_the_eager_frames(untrained_checkpoint):
    _dream_alike(_core(untrained_checkpoint, 2),
                 DreamCore(untrained_checkpoint, 2, "cpu", denoise_steps=2, compile=True))


@pytest.mark.slow   # two compiles of the whole step: minutes on a CPU
def test_two_compiled_cores_of_different_weights_each_dream_their_own_frames(untrained_checkpoint, tmp_path):
    """Compiled graphs are cached per code object: a second model of the same shapes must run its own weights."""
    from train.common.untrained import save_untrained

    other = save_untrained(tmp_path / "other", seed=1)
    first = DreamCore(untrained_checkpoint, 2, "cpu", denoise_steps=2, compile=True)
    _dream_alike(_core(untrained_checkpoint, 2), first)
    _dream_alike(_core(other, 2), DreamCore(other, 2, "cpu", denoise_steps=2, compile=True))


def test_auto_dtype_is_float32_at_batch_1_and_on_cuda_and_bfloat16_for_many_rows_on_a_bf16_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_dtype("auto", cpu, 1) == "float32"
    assert pick_dtype("auto", cuda, 64) == "float32"
    assert pick_dtype("bfloat16", cpu, 1) == "bfloat16" and pick_dtype("float32", cpu, 64) == "float32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert pick_dtype("auto", cpu, AUTO_BF16_MIN_ROWS - 1) == "float32"
    assert pick_dtype("auto", cpu, AUTO_BF16_MIN_ROWS) == "bfloat16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert pick_dtype("auto", cpu, 64) == "float32", "without native bf16 matmuls bf16 is emulated and slower"


def test_a_wrong_dtype_name_is_a_clear_error(untrained_checkpoint):
    with pytest.raises(ValueError, match="dtype must be one of"):
        DreamCore(untrained_checkpoint, 1, "cpu", "fp8")
    assert _core(untrained_checkpoint, 1).dtype == torch.float32        # "auto" at batch 1
