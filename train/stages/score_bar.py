"""Stage 1d: the score bar — paint and read the displayed score in latent space (worldmodel.score_bar).

Every recorded frame is one example: its latent and its score, which is the sum of the episode's
rewards before it (the bar shows the return so far; no game reader is needed). The painter regresses
the bar's latent rows on the score's digits (MSE); the reader classifies each digit from the rows of
real latents (noised by `read_noise`) and of painted ones of every score 0..max_score drawn uniformly
(cross-entropy), so a real start frame reads right and a dreamed frame reads back what was painted. `datasets=[ID, ...]` adds recordings (encoded
here) that reach higher scores than the main one: a digit value the painter never saw in a place is
not drawn (e.g. a coin-seeker with `+env_kwargs.lethal=false`, whose long episodes count past 100).
Reports held-out paint error, real-frame read accuracy and the round trip read(paint(s)) == s over
every score 0..max_score. Writes <run_dir>/checkpoint (score_bar.safetensors + .json);
`install=[DIR, ...]` writes it, frozen, into world-model checkpoints (their DiT needs an event model
with outcomes: the bar rises by the step's reward).

    python -m train.stages.score_bar autoencoder_dir=runs/coinchase/autoencoder \
        "datasets=[coinchase/seeker-nonlethal-v0]" "install=[envs/checkpoints/coinchase]"
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train.common.cli import hydra_main
from train.common.latents import encode_frames, load_latents
from train.common.loop import LoopConfig, TrainState, cosine_factor, load_state, run_loop
from worldmodel import checkpoint
from worldmodel.checkpoint import write_dir_atomically
from worldmodel.data import Episode, load_episodes
from worldmodel.dit import DiT
from worldmodel.score_bar import ScoreBar, ScoreBarConfig, load_score_bar, save_score_bar


@dataclass
class ScoreBarStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=3000, eval_every=1000, ckpt_every=500))
    autoencoder_dir: str = "runs/coinchase/autoencoder"   # its latents/ hold the main recording's cache
    run_dir: str = "runs/coinchase/score_bar"
    digits: int = 3                   # the bar's digits (CoinChase: the score modulo 1000)
    rows: int = 1                     # latent rows from the top the bar covers
    dim: int = 128
    batch_size: int = 256
    lr: float = 2e-3                  # AdamW, cosine to lr_final x lr
    lr_final: float = 0.05
    read_noise: float = 0.05          # std of the noise on real latents the reader trains on
    datasets: list[str] = field(default_factory=list)   # more Minari datasets (under data_root), encoded here
    data_root: str = "data/minari"
    install: list[str] = field(default_factory=list)    # world-model checkpoint dirs that get this score bar


@dataclass
class ScoredFrames:
    latents: torch.Tensor   # (N, C, h, w) float32
    scores: torch.Tensor    # (N,) int64 the score each frame shows


def scored_frames(episodes: list[Episode]) -> ScoredFrames:
    """Every frame of the episodes with its score: the sum of its episode's rewards before it."""
    scores = [np.concatenate([[0.0], np.cumsum(e.rewards)]) for e in episodes]
    return ScoredFrames(torch.from_numpy(np.concatenate([e.frames for e in episodes]).astype(np.float32)),
                        torch.from_numpy(np.round(np.concatenate(scores)).astype(np.int64)))


def load_frames(cfg: ScoreBarStageConfig) -> tuple[ScoredFrames, ScoredFrames]:
    """(train, held-out) frames: the latent cache's split plus the extra datasets' episodes, 1 in 10 held out."""
    latents = load_latents(Path(cfg.autoencoder_dir) / "latents")
    train, val = list(latents.train), list(latents.val or latents.train)
    if cfg.datasets:
        autoencoder = checkpoint.load(Path(cfg.autoencoder_dir) / "checkpoint").autoencoder.eval()
        for dataset_id in cfg.datasets:
            episodes, _ = load_episodes(dataset_id, cfg.data_root)
            encoded = [Episode(frames=encode_frames(autoencoder, e.frames), actions=e.actions, rewards=e.rewards,
                               terminations=e.terminations, truncations=e.truncations) for e in episodes]
            val += encoded[::10]
            train += [e for i, e in enumerate(encoded) if i % 10]
    return scored_frames(train), scored_frames(val)


def train_step(state: TrainState, data: ScoredFrames, max_score: int, cfg: ScoreBarStageConfig) -> dict[str, float]:
    bar, optimizer = state.modules["score_bar"], state.optimizers["score_bar"]
    lr = cfg.lr * min(1.0, (state.step + 1) / 100) * cosine_factor(state.step / max(cfg.loop.max_steps, 1), cfg.lr_final)
    for group in optimizer.param_groups:
        group["lr"] = lr
    index = torch.randint(len(data.scores), (cfg.batch_size,), generator=state.generator)
    device = cfg.loop.device
    latents, scores = data.latents[index].to(device), data.scores[index].to(device)           # (n, C, h, w), (n,)
    noisy = latents + cfg.read_noise * torch.randn(latents.shape, generator=state.generator).to(device)
    digits = bar.to_digits(scores)                                                            # (n, D)
    paint_loss = F.mse_loss(bar.bar(scores), latents[:, :, :cfg.rows])
    read_real = F.cross_entropy(bar.digit_logits(noisy).flatten(0, 1), digits.flatten())
    uniform = torch.randint(max_score + 1, (cfg.batch_size,), generator=state.generator).to(device)   # every score, not
    read_painted = F.cross_entropy(bar.digit_logits(bar.paint(latents, uniform).detach()).flatten(0, 1),  # only the
                                   bar.to_digits(uniform).flatten())                                     # common ones
    loss = paint_loss + read_real + read_painted
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "paint_mse": float(paint_loss.detach()), "lr": lr}


@torch.no_grad()
def evaluate(state: TrainState, data: ScoredFrames, max_score: int, cfg: ScoreBarStageConfig) -> dict[str, float]:
    """Held-out paint MSE and real-frame read accuracy; the round trip over every score 0..max_score."""
    bar = state.modules["score_bar"].eval()
    device = cfg.loop.device
    latents, scores = data.latents.to(device), data.scores.to(device)
    all_scores = torch.arange(max_score + 1, device=device)
    blank = torch.zeros(len(all_scores), *latents.shape[1:], device=device)
    metrics = {"val_paint_mse": float(F.mse_loss(bar.bar(scores), latents[:, :, :cfg.rows])),
               "val_read_exact": float((bar.read(latents) == scores.remainder(bar.modulus)).float().mean()),
               "round_trip_exact": float((bar.read(bar.paint(blank, all_scores)) == all_scores).float().mean()),
               "max_score": float(max_score)}
    bar.train()
    return metrics


def install_score_bar(dit: DiT, bar: ScoreBar, config: ScoreBarConfig) -> DiT:
    """`dit` rebuilt to carry `bar` (a DiT never trains its score bar), every other weight kept (the one way a score bar gets into a DiT)."""
    if (config.latent_channels, config.latent_size) != (dit.config.latent_channels, dit.config.latent_size):
        raise ValueError(f"the score bar is for {config.latent_channels}x{config.latent_size}^2 latents, the model's are "
                         f"{dit.config.latent_channels}x{dit.config.latent_size}^2")
    rebuilt = DiT(replace(dit.config, score_digits=config.digits, score_rows=config.rows, score_dim=config.dim))
    missing, unexpected = rebuilt.load_state_dict(dit.state_dict(), strict=False)
    assert all(k.startswith("score_bar.") for k in missing + unexpected), (missing, unexpected)
    rebuilt.score_bar.load_state_dict(bar.state_dict())
    return rebuilt.to(next(dit.parameters()).device).train(dit.training)


def install(bar_dir: Path, targets: list[str]) -> None:
    """Write this score bar into each world-model checkpoint dir of `targets`."""
    bar, config = load_score_bar(bar_dir)
    for target in targets:
        model = checkpoint.load(target)
        if model.dit is None:
            raise ValueError(f"{target} holds only an autoencoder: nothing to install the score bar into")
        dit = install_score_bar(model.dit, bar, config)
        model.config.dit = dit.config
        checkpoint.save(target, model.config, model.autoencoder, dit, model.start_frames, model.start_actions)
        print(f"[score_bar] installed {bar_dir} into {target}")


def main(cfg: ScoreBarStageConfig) -> dict[str, float]:
    train, val = load_frames(cfg)
    max_score = int(train.scores.max())
    sample = train.latents[0]
    config = ScoreBarConfig(latent_channels=sample.shape[0], latent_size=sample.shape[-1], digits=cfg.digits,
                            rows=cfg.rows, dim=cfg.dim)
    torch.manual_seed(cfg.loop.seed)
    bar = config.build().to(cfg.loop.device)
    optimizer = torch.optim.AdamW(bar.parameters(), lr=cfg.lr, weight_decay=0.0)
    state = TrainState(modules={"score_bar": bar}, optimizers={"score_bar": optimizer},
                       generator=torch.Generator().manual_seed(cfg.loop.seed))
    run_dir = Path(cfg.run_dir)
    load_state(run_dir, state)
    out = run_dir / "checkpoint"
    metrics = run_loop("score_bar", cfg.loop, run_dir, state, lambda s: train_step(s, train, max_score, cfg),
                       lambda s: evaluate(s, val, max_score, cfg),
                       lambda s: write_dir_atomically(out, lambda tmp: save_score_bar(tmp, s.modules["score_bar"], config)))
    install(out, list(cfg.install))
    return metrics


if __name__ == "__main__":
    hydra_main("score_bar", ScoreBarStageConfig, main)
