"""Stage 1e: the score bar — paint and read the displayed score in latent space (worldmodel.score_bar).

Every recorded frame is one example: its latent, its top rows of pixels (the bar) and its score, which
is the sum of the episode's rewards before it (the bar shows the return so far; no game reader is
needed). The painter regresses the bar's latent rows on the score's digits (MSE), so the DiT's cache
sees the rows the encoder would give; the reader classifies each digit from the rows of real latents
(noised by `read_noise`) and of painted ones of every score 0..max_score drawn uniformly
(cross-entropy), so a real start frame reads right and a dreamed frame reads back exactly what was
painted; with `draw` the glyphs MLP regresses the bar's pixels on the digits (MSE + L1, `hud_weight` on
the pixels that change across frames), and the dream shows those instead of the decoder's drawing of
the bar: through the decoder, painted bars do not all read back; drawn, every held-out bar is right
(docs/ablation.md "The glyphs").

`extra_datasets=[ID, ...]` adds recordings that reach higher scores than the main one: a digit value
the painter never saw in a place is not drawn (e.g. long scripted play whose episodes count past 100: a game
plug-in's `record_score`). One episode in ten of each
dataset is held out. Reports held-out bars right (the drawn bar vs the real one, every pixel within
`BAR_TOLERANCE`; beside it the decoder's drawing from the encoder's own latents), real-frame read
accuracy and the round trip read(paint(s)) == s over every score 0..max_score. Writes
<run_dir>/checkpoint (score_bar.safetensors + .json); `install=[DIR, ...]` writes it, frozen, into
world-model checkpoints (their DiT needs an event model with outcomes: the bar rises by the step's reward).

    python -m train.stages.score_bar autoencoder=runs/coinchase/autoencoder/checkpoint \
        "extra_datasets=[coinchase/seeker-nonlethal-v0]" "install=[envs/checkpoints/coinchase]"
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train.common.cli import hydra_main
from train.common.dit_stage import install_into, rebuild_dit
from train.common.latents import encode_frames
from train.common.loop import LoopConfig, TrainState, already_trained, load_state, run_loop, warmup_cosine_lr
from train.stages.autoencoder import pixel_loss
from train.stages.decoder import hud_pixels
from worldmodel import checkpoint
from worldmodel.autoencoder import Autoencoder
from worldmodel.checkpoint import write_dir_atomically
from worldmodel.data import Episode, load_episodes
from worldmodel.dit import DiT
from worldmodel.score_bar import ScoreBar, ScoreBarConfig, load_score_bar, save_score_bar

BAR_TOLERANCE = 48     # uint8 levels: a decoded bar pixel this close to the real one counts as right


@dataclass
class ScoreBarStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=6000, eval_every=2000, ckpt_every=500))
    autoencoder: str = "runs/game/autoencoder/checkpoint"        # its encoder gives the latents (any decoder)
    dataset_id: str = "game/mixed-v0"
    extra_datasets: list[str] = field(default_factory=list)   # more Minari datasets (under data_root)
    data_root: str = "data/minari"
    run_dir: str = "runs/game/score_bar"
    digits: int = 3                   # digits the score bar shows
    rows: int = 1                     # latent rows from the top the bar covers
    dim: int = 128
    batch_size: int = 128
    lr: float = 3e-3                  # AdamW, cosine to lr_final x lr
    lr_final: float = 0.05
    read_noise: float = 0.02          # std of the noise on real latents the reader trains on
    draw: bool = True                 # the bar draws its own pixels (else the decoder draws it from the painted rows)
    hud_weight: float = 10.0          # pixel-loss weight of the bar pixels that change across frames (the digits)
    install: list[str] = field(default_factory=list)    # world-model checkpoint dirs that get this score bar


@dataclass
class ScoredFrames:
    latents: torch.Tensor   # (N, C, h, w) float32
    scores: torch.Tensor    # (N,) int64 the score each frame shows
    bars: torch.Tensor      # (N, P, W, 3) uint8 the frame's top P pixel rows (the bar)


def scored_frames(episodes: list[Episode], autoencoder: Autoencoder | None, bar_pixels: int) -> ScoredFrames:
    """Every frame of the episodes (uint8 frames; encoded by `autoencoder`, or already latents when it is None) with
    its score: the sum of its episode's rewards before it."""
    scores = [np.concatenate([[0.0], np.cumsum(e.rewards)]) for e in episodes]
    frames = np.concatenate([e.frames for e in episodes])
    latents = frames.astype(np.float32) if autoencoder is None else encode_frames(autoencoder, frames)
    bars = frames[:, :bar_pixels] if autoencoder is not None else np.zeros((len(frames), 0, 0, 3), np.uint8)
    return ScoredFrames(torch.from_numpy(latents), torch.from_numpy(np.round(np.concatenate(scores)).astype(np.int64)),
                        torch.from_numpy(np.ascontiguousarray(bars)))


def load_frames(cfg: ScoreBarStageConfig, autoencoder: Autoencoder) -> tuple[ScoredFrames, ScoredFrames]:
    """(train, held-out) frames of every dataset, one episode in ten held out."""
    train, val = [], []
    for dataset_id in [cfg.dataset_id, *cfg.extra_datasets]:
        episodes, _ = load_episodes(dataset_id, cfg.data_root)
        val += episodes[::10]
        train += [e for i, e in enumerate(episodes) if i % 10]
    bar_pixels = cfg.rows * autoencoder.config.frame_size // autoencoder.config.latent_size
    return scored_frames(train, autoencoder, bar_pixels), scored_frames(val, autoencoder, bar_pixels)


def bar_loss(state: TrainState, latents: torch.Tensor, scores: torch.Tensor, bars: torch.Tensor,
             cfg: ScoreBarStageConfig) -> torch.Tensor:
    """Painted rows vs the encoder's latents, + (with glyphs) the drawn bar vs the real one (bars (n, P, W, 3)
    uint8)."""
    bar = state.modules["score_bar"]
    loss = F.mse_loss(bar.bar(scores), latents[:, :, :cfg.rows])
    if bar.glyphs is not None:
        weight = 1.0 + (cfg.hud_weight - 1.0) * state.scratch["hud"].float()                  # (1, 1, P, W)
        loss = loss + pixel_loss(bar.bar_image(scores), Autoencoder.to_float(bars), 0.5,
                                 weight.expand(len(bars), -1, -1, -1))
    return loss


def train_step(state: TrainState, data: ScoredFrames, max_score: int, cfg: ScoreBarStageConfig) -> dict[str, float]:
    bar, optimizer = state.modules["score_bar"], state.optimizers["score_bar"]
    lr = warmup_cosine_lr(optimizer, state.step, cfg.loop.max_steps, cfg.lr, cfg.lr_final)
    index = torch.randint(len(data.scores), (cfg.batch_size,), generator=state.generator)
    device = cfg.loop.device
    latents, scores = data.latents[index].to(device), data.scores[index].to(device)           # (n, C, h, w), (n,)
    paint_loss = bar_loss(state, latents, scores, data.bars[index].to(device), cfg)
    noisy = latents + cfg.read_noise * torch.randn(latents.shape, generator=state.generator).to(device)
    read_real = F.cross_entropy(bar.digit_logits(noisy).flatten(0, 1), bar.to_digits(scores).flatten())
    uniform = torch.randint(max_score + 1, (cfg.batch_size,), generator=state.generator).to(device)   # every score, not
    read_painted = F.cross_entropy(bar.digit_logits(bar.paint(latents, uniform).detach()).flatten(0, 1),  # only the
                                   bar.to_digits(uniform).flatten())                                     # common ones
    loss = paint_loss + read_real + read_painted
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "paint_loss": float(paint_loss.detach()), "lr": lr}


def bar_right(drawn: torch.Tensor, bars: torch.Tensor) -> torch.Tensor:
    """(n,) bool: every pixel of the decoded bar (n, 3, P, W) float within BAR_TOLERANCE of the real one
    (n, P, W, 3)."""
    return ((Autoencoder.to_uint8(drawn).int() - bars.int()).abs().amax(dim=(1, 2, 3)) <= BAR_TOLERANCE)


@torch.no_grad()
def evaluate(state: TrainState, data: ScoredFrames, max_score: int, cfg: ScoreBarStageConfig) -> dict[str, float]:
    """Held-out paint error, bars right (drawn; the decoder's from real latents), real-frame reads; the round trip over
    every score 0..max_score."""
    bar, autoencoder = state.modules["score_bar"].eval(), state.scratch.get("autoencoder")
    device = cfg.loop.device
    latents, scores = data.latents.to(device), data.scores.to(device)
    all_scores = torch.arange(max_score + 1, device=device)
    blank = torch.zeros(len(all_scores), *latents.shape[1:], device=device)
    metrics = {"val_paint_mse": float(F.mse_loss(bar.bar(scores), latents[:, :, :cfg.rows])),
               "val_read_exact": float((bar.read(latents) == scores.remainder(bar.modulus)).float().mean()),
               "round_trip_exact": float((bar.read(bar.paint(blank, all_scores)) == all_scores).float().mean()),
               "max_score": float(max_score)}
    if data.bars.numel():
        p = data.bars.shape[1]
        encoded = torch.cat([bar_right(autoencoder.decode_float(latents[i:i + 512])[:, :, :p],
                                       data.bars[i:i + 512].to(device))
                             for i in range(0, len(scores), 512)])
        metrics["val_bar_right_decoder"] = float(encoded.float().mean())
        if bar.glyphs is not None:
            metrics["val_bar_right_drawn"] = float(bar_right(bar.bar_image(scores),
                                                             data.bars.to(device)).float().mean())
    bar.train()
    return metrics


def install_score_bar(dit: DiT, bar: ScoreBar, config: ScoreBarConfig) -> DiT:
    """`dit` rebuilt to carry `bar` (a DiT never trains its score bar), every other weight kept (the one way a score bar
    gets into a DiT)."""
    if (config.latent_channels, config.latent_size) != (dit.config.latent_channels, dit.config.latent_size):
        raise ValueError(f"the score bar is for {config.latent_channels}x{config.latent_size}^2 latents, "
                         f"the model's are {dit.config.latent_channels}x{dit.config.latent_size}^2")
    rebuilt = rebuild_dit(dit, "score_bar", score_digits=config.digits, score_rows=config.rows, score_dim=config.dim,
                          score_pixels=config.bar_pixels)
    rebuilt.score_bar.load_state_dict(bar.state_dict())
    return rebuilt


def install(bar_dir: Path, targets: list[str]) -> None:
    """Write this score bar into each world-model checkpoint dir of `targets`."""
    bar, config = load_score_bar(bar_dir)
    install_into(targets, lambda dit, _: install_score_bar(dit, bar, config), "the score bar", bar_dir, "score_bar")


def main(cfg: ScoreBarStageConfig) -> dict[str, float]:
    out = Path(cfg.run_dir) / "checkpoint"
    if already_trained(Path(cfg.run_dir), cfg.loop, out):       # a rerun: no frames to encode
        install(out, list(cfg.install))
        return {}
    autoencoder = checkpoint.load(cfg.autoencoder, cfg.loop.device).autoencoder.eval().requires_grad_(False)
    train, val = load_frames(cfg, autoencoder)
    max_score = int(train.scores.max())
    config = ScoreBarConfig(latent_channels=train.latents.shape[1], latent_size=train.latents.shape[-1],
                            digits=cfg.digits, rows=cfg.rows, dim=cfg.dim,
                            bar_pixels=train.bars.shape[1] if cfg.draw else 0)
    torch.manual_seed(cfg.loop.seed)
    bar = config.build().to(cfg.loop.device)
    optimizer = torch.optim.AdamW(bar.parameters(), lr=cfg.lr, weight_decay=0.0)
    background = Autoencoder.to_float(
        torch.from_numpy(np.median(train.bars[::97].numpy(), axis=0).astype(np.uint8))[None])
    state = TrainState(modules={"score_bar": bar}, optimizers={"score_bar": optimizer},
                       generator=torch.Generator().manual_seed(cfg.loop.seed),
                       scratch={"autoencoder": autoencoder,
                                "hud": hud_pixels(train.bars[::97].numpy(), background,
                                                  train.bars.shape[1]).to(cfg.loop.device)})
    run_dir = Path(cfg.run_dir)
    load_state(run_dir, state)
    metrics = run_loop("score_bar", cfg.loop, run_dir, state, lambda s: train_step(s, train, max_score, cfg),
                       lambda s: evaluate(s, val, max_score, cfg),
                       lambda s: write_dir_atomically(
                           out, lambda tmp: save_score_bar(tmp, s.modules["score_bar"], config)))
    install(out, list(cfg.install))
    return metrics


if __name__ == "__main__":
    hydra_main("score_bar", ScoreBarStageConfig, main)
