"""The KV cache's contract: rolling window with sinks, bounded positions, per-element reset."""
import numpy as np
import torch

from worldmodel.kv_cache import EMPTY, KVCache
from worldmodel.rollout import cache_access, new_cache, next_chunk, prime


def test_rolling_window_keeps_sinks_and_the_most_recent_frames():
    cache = KVCache(batch=1, layers=1, heads=1, head_dim=2, tokens_per_frame=1, window=3, sink=2)
    rows = np.array([0])
    for _ in range(10):
        cache.advance(rows, 1)
    assert sorted(cache.slot_time[0].tolist()) == [0, 1, 7, 8, 9]
    valid, distance = cache.visible(rows, cache.frames_seen[rows])
    assert valid.all()
    assert sorted(distance[0].tolist()) == [1, 2, 3, 9, 10]


def test_written_frames_land_in_their_slots_and_evict_the_oldest():
    cache = KVCache(batch=1, layers=1, heads=1, head_dim=2, tokens_per_frame=1, window=2, sink=0)
    rows = torch.tensor([0])
    for frame in range(3):
        slots = cache.slot_for(cache.advance(np.array([0]), 1))
        value = torch.full((1, 1, 1, 1, 2), float(frame))
        cache.layers[0].write(rows, slots, value, value)
    stored = {int(t): float(cache.layers[0].k[0, 0, s, 0, 0]) for s, t in enumerate(cache.slot_time[0])}
    assert stored == {1: 1.0, 2: 2.0}


def test_positions_at_frame_10000_stay_in_the_trained_range(perturbed_model):
    model = perturbed_model(window=4, sink=1)
    cache = new_cache(model, batch=1)
    latents = torch.randn(1, 1, 4, 4, 4)
    with torch.no_grad():
        prime(model, cache, latents, torch.zeros(1, 1, dtype=torch.long))
    cache.frames_seen[:] = 10_000          # jump ahead: the ring holds frames 9996..9999 and sink frame 0
    cache.slot_time[0] = torch.tensor([0, 9996, 9997, 9998, 9999])
    access, positions = cache_access(model, cache, np.array([0]), 1, write=False)
    limit = model.config.max_position
    assert int(access.positions.max()) <= limit and int(positions.max()) <= limit
    assert int(access.positions.min()) >= 0


def test_resetting_one_element_leaves_the_others_untouched(perturbed_model):
    model = perturbed_model(window=4)
    cache = new_cache(model, batch=3)
    g = torch.Generator().manual_seed(0)
    noise = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
    with torch.no_grad():
        prime(model, cache, torch.randn(3, 2, 4, 4, 4), torch.zeros(3, 2, dtype=torch.long))
        next_chunk(model, cache, torch.ones(3, 1, dtype=torch.long), [1.0], noise)
    keys = [layer.k.clone() for layer in cache.layers]
    times = cache.slot_time.clone()
    with torch.no_grad():
        prime(model, cache, torch.randn(1, 2, 4, 4, 4), torch.zeros(1, 2, dtype=torch.long), rows=np.array([1]))
    for before, layer in zip(keys, cache.layers, strict=True):
        assert torch.equal(before[[0, 2]], layer.k[[0, 2]])
        assert not torch.equal(before[1], layer.k[1])
    assert torch.equal(times[[0, 2]], cache.slot_time[[0, 2]])
    assert cache.frames_seen.tolist() == [3, 2, 3]
    assert int((cache.slot_time[1] == EMPTY).sum()) == 2
