"""The one autoregressive rollout: prime a KV cache with real frames, then generate chunk by chunk.

`next_chunk` is what `env.step` calls and what Self Forcing training unrolls — the same code, so
there is no train-test gap in the code itself. Per chunk: few-step denoising from noise while
reading the cache (one chosen exit step may keep gradients, the others run under no_grad), then a
no-grad clean pass over the result that writes the cache and reads the reward / termination heads.
A model with entity events (`DiTConfig.event_channels`) first draws the next frame's entity cells
from its event model on the cache's last frame, then denoises given them. A model with a score bar
(`DiTConfig.score_digits`) then paints the bar rows: the last frame's score plus the step's reward.

Dimensions: B batch (the rows of the cache this call serves), c frames per chunk, T frames,
C latent channels, h = w latent size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from worldmodel.blocks import CacheAccess
from worldmodel.dit import DiT
from worldmodel.flow import add_noise
from worldmodel.kv_cache import KVCache

NoiseSource = Callable[[tuple[int, ...]], torch.Tensor]


@dataclass
class ChunkResult:
    latents: torch.Tensor      # (B, c, C, h, w) generated clean latents (the exit step's x0 prediction)
    reward: torch.Tensor       # (B, c) from the clean cache-writing pass (or the event model's, with event_outcomes)
    termination: torch.Tensor  # (B, c) logits, same source
    events: torch.Tensor | None = None   # (B, c, E) int64 sampled entity cells (flat latent cell index), if any
    score: torch.Tensor | None = None    # (B, c) int64 the score the frames' bar shows, if any (score_digits)


def new_cache(model: DiT, batch: int, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> KVCache:
    """An empty KV cache sized by the model's config (window, sink, layers, heads)."""
    cfg = model.config
    if not cfg.causal:
        raise ValueError("a bidirectional model has no KV cache rollout; use a causal (student / TF / DF) model")
    return KVCache(batch, cfg.depth, cfg.heads, model.head_dim, cfg.tokens_per_frame, cfg.window, cfg.sink,
                   device, dtype,
                   latent_shape=(cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                   drawn_cells=cfg.drawn_cells if cfg.event_reach else 0)


def _rows(cache: KVCache, rows: np.ndarray | None) -> np.ndarray | None:
    """rows as int64 numpy, or None for every row of the cache (the step of a whole batch: no index copy)."""
    if rows is None:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    return None if len(rows) == cache.batch and bool((rows == np.arange(cache.batch)).all()) else rows


def cache_access(model: DiT, cache: KVCache, rows: np.ndarray | None, frames: int, write: bool
                 ) -> tuple[CacheAccess, torch.Tensor]:
    """Read (and optionally reserve write slots) for the next `frames` frames of each row (rows None: every row).

    Positions: the current chunk sits at base + i with base = sink + window; a cached frame at
    distance d (frames before the chunk start) sits at base - d, clamped at 0 for old sink frames.
    So every position is in [0, config.max_position] at any horizon. Returns the access and the
    current frames' positions (frames,). For every row it is device work only (capturable in a CUDA graph).
    """
    cfg = model.config
    base = cfg.sink + cfg.window
    all_rows = _rows(cache, rows) is None
    row_index = cache.row_index(None if all_rows else rows)
    valid, distance = cache.visible(row_index, cache.frames_seen[row_index])                # (R, F) each
    write_slots = cache.slot_for(cache.advance(row_index, frames)) if write else None      # (R, frames)
    access = CacheAccess(layers=cache.layers, rows=row_index, valid=valid, positions=(base - distance).clamp_min(0),
                         write_slots=write_slots, all_rows=all_rows,
                         previous=cache.previous if all_rows else cache.previous[row_index])
    return access, torch.arange(base, base + frames, device=cache.device)


def write_frames(model: DiT, cache: KVCache, latents: torch.Tensor, actions: torch.Tensor,
                 rows: np.ndarray | None = None) -> ChunkResult:
    """The clean pass: store one chunk of finished frames in the cache; returns the heads. latents (B, c, C, h, w).

    The chunk's last frame becomes each row's `previous` (the frame before the next chunk)."""
    rows = _rows(cache, rows)
    b, c = latents.shape[:2]
    if c != model.config.chunk:
        raise ValueError(f"a cache write takes one chunk of {model.config.chunk} frames, got {c}")
    sigma = torch.zeros((b, c), device=latents.device)
    access, positions = cache_access(model, cache, rows, c, write=True)
    with torch.no_grad():
        out = model(latents, sigma, actions, positions=positions, cache=access)
        cache.previous[access.rows] = latents[:, -1].detach().to(cache.previous.dtype)
    return ChunkResult(latents=latents, reward=out.reward, termination=out.termination)


def prime(model: DiT, cache: KVCache, latents: torch.Tensor, actions: torch.Tensor,
          rows: np.ndarray | None = None) -> ChunkResult:
    """Reset the given rows and fill their cache with real context, chunk by chunk.

    latents (B, T, C, h, w) with T a multiple of the chunk size; actions (B, T), the action before each frame.
    """
    rows = _rows(cache, rows)
    t, c = latents.shape[1], model.config.chunk
    if t % c or t == 0:
        raise ValueError(f"context of {t} frames is not a positive multiple of the chunk size {c}")
    cache.reset(rows)
    return _concat([write_frames(model, cache, latents[:, i:i + c], actions[:, i:i + c], rows) for i in range(0, t, c)])


def next_chunk(model: DiT, cache: KVCache, actions: torch.Tensor, sigmas: list[float], noise: NoiseSource,
               rows: np.ndarray | None = None, exit_step: int | None = None, grad: bool = False,
               event_min_prob: float = 0.01) -> ChunkResult:
    """Generate the next chunk under `actions` (B, c): few-step denoising over the cache, then the clean write.

    sigmas: the schedule (host floats, highest first). exit_step: the step whose x0 prediction
    becomes the frame (default: the last). Between steps the x0 prediction is noised with fresh noise
    to the next sigma (the few-step sampler a distilled student is trained with). grad: whether the exit
    step keeps gradients (Self Forcing); every other step runs under no_grad, and the cache write is
    always no-grad and detached. event_min_prob: entity cells less likely than this are never drawn
    (models with entity events).
    """
    rows = _rows(cache, rows)
    cfg = model.config
    b, c = actions.shape
    exit_step = len(sigmas) - 1 if exit_step is None else exit_step
    if not 0 <= exit_step < len(sigmas):
        raise ValueError(f"exit_step {exit_step} is outside the {len(sigmas)}-step schedule")
    shape = (b, c, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    read, positions = cache_access(model, cache, rows, c, write=False)
    last = cache.cells[read.rows] if cache.cells.shape[1] else None                      # (B, R) previous draw
    cells, maps, outcomes = draw_events(model, read.previous, actions, noise, event_min_prob, last)
    if last is not None:
        cache.cells[read.rows] = cells[:, -1, :cache.cells.shape[1]]
    x = noise(shape)                                                                   # (B, c, C, h, w)
    for step in range(exit_step + 1):
        sigma = torch.full((b, c), sigmas[step], device=x.device)
        with torch.set_grad_enabled(grad and step == exit_step and torch.is_grad_enabled()):
            velocity = model(x, sigma, actions, positions=positions, cache=read, events=maps).velocity
            x0 = x - sigmas[step] * velocity
        if step < exit_step:
            x = add_noise(x0.detach(), noise(shape), torch.full((b, c), sigmas[step + 1], device=x.device))
    if cfg.overlap_paint:         # two sprites in one cell show the recorded latent, not a sampler's blend
        x0 = model.paint(x0[:, 0], maps[:, 0])[:, None]
    score = None
    if cfg.score_digits:              # the bar shows the previous frame's score plus this step's reward
        score = model.score_bar.next_score(read.previous, outcomes[:, 0])
        x0 = model.score_bar.paint(x0[:, 0], score)[:, None]
        score = score[:, None]
    written = write_frames(model, cache, x0.detach(), actions, rows)
    if outcomes is not None:      # the event model's reward and termination of this step, given its draw
        return ChunkResult(latents=x0, reward=outcomes[:, None, 0], termination=outcomes[:, None, 1], events=cells,
                           score=score)
    return ChunkResult(latents=x0, reward=written.reward, termination=written.termination, events=cells)


def draw_events(model: DiT, previous: torch.Tensor, actions: torch.Tensor, noise: NoiseSource, min_prob: float,
                last: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The chunk's entity cells (B, c, E) and one-hot maps (B, c, E, h, w), drawn from the event model on each
    row's last frame `previous` (B, C, h, w), and the step's (reward, termination logit) (B, 2) when the event
    model gives them; Nones for a model without entity events. last (B, R): each row's previous draw, which bounds
    this one (DiTConfig.event_reach)."""
    cfg = model.config
    if not cfg.event_channels:
        return None, None, None
    if actions.shape[1] != 1:
        raise ValueError(f"entity events are drawn frame by frame: chunk must be 1, got {actions.shape[1]}")
    gaussian = noise((actions.shape[0], cfg.event_channels, cfg.latent_size ** 2 + cfg.event_none))
    cells, maps, outcomes = model.sample_events(previous, actions[:, 0], gaussian, min_prob, last)
    return cells[:, None], maps[:, None], outcomes


def unroll(model: DiT, cache: KVCache, actions: torch.Tensor, sigmas: list[float], noise: NoiseSource,
           exit_step: int | None = None, grad: bool = False, event_min_prob: float = 0.01) -> ChunkResult:
    """Generate T frames under actions (B, T), chunk after chunk, from an already primed cache."""
    c = model.config.chunk
    if actions.shape[1] % c:
        raise ValueError(f"{actions.shape[1]} actions are not a multiple of the chunk size {c}")
    return _concat([next_chunk(model, cache, actions[:, i:i + c], sigmas, noise, None, exit_step, grad, event_min_prob)
                    for i in range(0, actions.shape[1], c)])


def _concat(results: list[ChunkResult]) -> ChunkResult:
    events = None if results[0].events is None else torch.cat([r.events for r in results], dim=1)
    score = None if results[0].score is None else torch.cat([r.score for r in results], dim=1)
    return ChunkResult(latents=torch.cat([r.latents for r in results], dim=1),
                       reward=torch.cat([r.reward for r in results], dim=1),
                       termination=torch.cat([r.termination for r in results], dim=1), events=events, score=score)
