"""`python -m train.eval.one_step checkpoint=DIR`: the fast rules probe used by the ablations (docs/ablation.md).

Numbers that say whether a model puts the player (and the enemy) where the rules say, without a full eval:
- *one-step player exact*: held-out clips of the autoencoder stage's latent cache; the causal model's
  teacher-forcing forward (real previous frames as clean context) at noise level `sigma` for the
  next frame; its x0 prediction decoded and read with `envs.coinchase_reader`. Split by whether the
  real player moved (a blocked move or a no-op is "stayed").
- *terminal exact*: the same forward on held-out clips that end where their episode ends by a termination
  (CoinChase: the catch, the enemy drawn over the player); how often the predicted last frame shows the
  player and the enemy on the real frame's cells (given the true events, the frame is determined).
- *rollout player exact* at each horizon: open-loop rollouts of the checkpoint (its own sampler)
  from held-out real starts under random-persistent keys, against the real game; and the rate of
  generated frames 1..h that show exactly one player, one coin and one enemy.
- with `teacher=DIR`, *teacher samples*: a bidirectional teacher integrates the probability-flow ODE
  (`euler_steps` Euler steps, classifier-free guidance `guidance`) for the frames after a clean real
  prefix of `prefix` frames, as ODE init samples it; the rate of generated frames showing exactly one
  player, one coin and one enemy (what ODE init and the DMD real score inherit); and the teacher's
  *context use*: its x0 prediction of a clip's last frame at noise level `sigma` from the clean real
  frames before it, and how often the player, coin and enemy cells equal the real ones; and its terminal exact.
Prints one JSON line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import worldmodel
from envs.coinchase_reader import read_state
from train.common.events import add_dit_cells
from train.common.latents import LatentData, load_latents
from train.eval.rollouts import dream_frames, real_rollouts
from worldmodel.data import ClipDataset, sample_batch
from worldmodel.events import cell_maps
from worldmodel.flow import euler_sample, ode_sigmas
from worldmodel.masks import teacher_forcing_mask, teacher_forcing_previous


@dataclass
class OneStepConfig:
    checkpoint: str = "runs/coinchase/tf/checkpoint"       # a causal chunk-1 checkpoint dir
    latents: str = "runs/coinchase/autoencoder/latents"    # the autoencoder stage's latent cache (val split used)
    clips: int = 256                  # held-out clips in the one-step probe
    clip_frames: int = 4
    sigma: float = 1.0                # noise level of the predicted frame (1 = the first denoising step)
    horizons: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    seeds: list[int] = field(default_factory=lambda: [101, 102])   # real starts for the rollouts (0 starts: skip)
    starts: int = 32                  # real starts per seed
    seed: int = 0
    teacher: str = ""                 # a teacher checkpoint dir: also score its ODE samples ("" = skip)
    teacher_clips: int = 32
    guidance: float = 1.0
    prefix: int = 1                   # clean real frames before the teacher's generated ones
    euler_steps: int = 48


def players(autoencoder, latents: torch.Tensor) -> np.ndarray:
    """(..., C, h, w) latents -> (..., 2) player cells read from the decoded frames."""
    lead = latents.shape[:-3]
    frames = autoencoder.decode(latents.reshape(-1, *latents.shape[-3:]).float()).numpy()
    return read_state(frames).player.reshape(*lead, 2)


def held_out_clips(cfg: OneStepConfig, data: LatentData, count: int) -> tuple[dict[str, torch.Tensor], torch.Generator]:
    """`count` clips of the latent cache's validation episodes, and the seeded generator that drew them."""
    clips = ClipDataset(data.val or data.train, cfg.clip_frames, data.n_actions)
    generator = torch.Generator().manual_seed(cfg.seed)
    return sample_batch(clips, count, generator), generator


def model_and_clips(cfg: OneStepConfig, model: worldmodel.WorldModel, data: LatentData, count: int) -> tuple:
    """The DiT (eval) and autoencoder of `model`, `count` held-out clips' latents (B, T, C, h, w), actions
    (B, T) and true entity-event maps (B, T, E, h, w; None for a model without events), and the generator
    that drew them (for the noise). These probes measure the denoiser given the true events."""
    batch, generator = held_out_clips(cfg, data, count)
    events = true_events(model.dit, batch["event_cells"]) if "event_cells" in batch else None
    return model.dit.eval(), model.autoencoder, batch["frames"].float(), batch["actions"], events, generator


def true_events(dit, cells: torch.Tensor) -> torch.Tensor | None:
    """The event maps (B, T, E', h, w) a model takes, from the true cells (B, T, E[+1]) of the latent cache (with the
    player column when `main` added it): its entities, and the player where the model has that channel."""
    if not dit.config.event_channels:
        return None
    wanted = dit.config.drawn_cells
    if cells.shape[-1] < wanted:
        raise ValueError(f"the model takes {wanted} event channels but the latent cache labels {cells.shape[-1]}")
    return cell_maps(cells[..., :wanted], dit.config.latent_size)


def teacher_forced_x0(dit, clean: torch.Tensor, actions: torch.Tensor, events: torch.Tensor | None, sigma: float,
                      generator: torch.Generator) -> torch.Tensor:
    """The causal model's x0 prediction (B, T, C, h, w) of every frame of clips clean (B, T, C, h, w) noised to `sigma`,
    each from the clean real frames before it (its teacher-forcing forward), given the true events."""
    b, t = actions.shape
    sigmas = torch.full((b, t), sigma)
    noisy = (1 - sigma) * clean + sigma * torch.randn(clean.shape, generator=generator)
    out = dit(torch.cat([clean, noisy], 1), torch.cat([torch.zeros_like(sigmas), sigmas], 1), actions.repeat(1, 2),
              teacher_forcing_mask(t, dit.config.chunk), torch.arange(t).repeat(2),
              previous=teacher_forcing_previous(clean, noisy, dit.config.chunk),
              events=None if events is None else events.repeat(1, 2, 1, 1, 1))
    return noisy - sigma * out.velocity[:, t:]


@torch.no_grad()
def one_step_exact(cfg: OneStepConfig, model: worldmodel.WorldModel, data: LatentData) -> dict[str, float]:
    dit, autoencoder, clean, actions, events, generator = model_and_clips(cfg, model, data, cfg.clips)
    predicted = teacher_forced_x0(dit, clean, actions, events, cfg.sigma, generator)
    truth, got = players(autoencoder, clean), players(autoencoder, predicted)              # (B, T, 2) each
    exact = (truth == got).all(-1)[:, 1:]                                                   # frame 0 has no previous
    moved = (truth[:, 1:] != truth[:, :-1]).any(-1)
    return {"exact": float(exact.mean()), "moved": float(exact[moved].mean()), "stayed": float(exact[~moved].mean())}


def last_frame_x0(dit, clean: torch.Tensor, actions: torch.Tensor, events: torch.Tensor | None, sigma: float,
                  guidance: float, generator: torch.Generator) -> torch.Tensor:
    """x0 prediction (B, C, h, w) of each clip's last frame noised to `sigma`, from the clean real frames before it:
    a causal model's teacher-forcing forward, or a bidirectional teacher's (guided) forward over the whole clip."""
    if dit.config.causal:
        return teacher_forced_x0(dit, clean, actions, events, sigma, generator)[:, -1]
    b, t = actions.shape
    noisy = clean.clone()
    noisy[:, -1] = (1 - sigma) * clean[:, -1] + sigma * torch.randn(clean[:, -1].shape, generator=generator)
    sigmas = torch.zeros(b, t)
    sigmas[:, -1] = sigma
    return noisy[:, -1] - sigma * dit.guided_velocity(noisy, sigmas, actions, guidance, events=events)[:, -1].float()


@torch.no_grad()
def terminal_exact(cfg: OneStepConfig, model: worldmodel.WorldModel, data: LatentData) -> dict[str, float]:
    """Of held-out clips ending on a frame that ends its episode by a termination: the predicted frame's player and
    enemy cells both the real ones (`both`), and each alone. Empty if the held-out episodes never terminate."""
    ending = [e for e in (data.val or data.train) if len(e) >= cfg.clip_frames and e.terminations[-1]][:cfg.clips]
    if not ending:
        return {}
    clips = ClipDataset(ending, cfg.clip_frames, data.n_actions)
    last = [i for i in range(len(clips))
            if clips.window_start[i] + cfg.clip_frames == len(ending[clips.window_episode[i]])]
    items = [clips[i] for i in last]
    clean = torch.stack([item["frames"] for item in items]).float()                        # (B, T, C, h, w)
    actions = torch.stack([item["actions"] for item in items])                              # (B, T)
    dit = model.dit.eval()
    events = (true_events(dit, torch.stack([item["event_cells"] for item in items])) if "event_cells" in items[0]
              else None)
    predicted = last_frame_x0(dit, clean, actions, events, cfg.sigma, cfg.guidance,
                              torch.Generator().manual_seed(cfg.seed))
    decode = model.autoencoder.decode
    got, real = read_state(decode(predicted.float()).numpy()), read_state(decode(clean[:, -1]).numpy())
    player, enemy = (got.player == real.player).all(1), (got.enemy == real.enemy).all(1)
    return {"clips": len(items), "both": float((player & enemy).mean()), "player": float(player.mean()),
            "enemy": float(enemy.mean())}


def rollout_exact(cfg: OneStepConfig, model: worldmodel.WorldModel) -> dict[str, dict[int, float]]:
    """Player exact at frame h, and the rate of frames 1..h showing exactly one player, coin and enemy."""
    if not cfg.seeds or cfg.starts < 1:
        return {}
    real = real_rollouts("policy", list(cfg.seeds), cfg.starts, model.start_frames.shape[1], model.dit.config.n_actions,
                         max(cfg.horizons), chase_prob=0.5, lethal=False)
    exact, one_of_each = [], []
    for h, (frames, _, _) in enumerate(dream_frames(cfg.checkpoint, real)):
        state = read_state(frames)
        exact.append((state.player == real.players[:, h]).all(1))
        one_of_each.append(state.one_of_each)
    exact, one_of_each = np.stack(exact, 1), np.stack(one_of_each, 1)                       # (S, H) each
    return {"player_exact": {h: float(exact[:, h - 1].mean()) for h in cfg.horizons},
            "one_of_each": {h: float(one_of_each[:, :h].mean()) for h in cfg.horizons}}


@torch.no_grad()
def teacher_one_of_each(cfg: OneStepConfig, model: worldmodel.WorldModel, data: LatentData) -> dict[str, float]:
    teacher, autoencoder, clips, actions, events, generator = model_and_clips(cfg, model, data, cfg.teacher_clips)
    prefix = clips[:, :cfg.prefix]
    b, t = actions.shape

    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sig = torch.cat([torch.zeros(b, cfg.prefix), torch.full((b, t - cfg.prefix), sigma)], 1)
        return teacher.guided_velocity(torch.cat([prefix, x], 1), sig, actions, cfg.guidance,
                                       events=events)[:, cfg.prefix:]

    noise = torch.randn(b, t - cfg.prefix, *prefix.shape[2:], generator=generator)
    sample, _ = euler_sample(velocity, noise, ode_sigmas(cfg.euler_steps, model.config.sampler.shift))
    state = read_state(autoencoder.decode(sample.flatten(0, 1).float()).numpy())
    return {"one_of_each": float(state.one_of_each.mean()), "one_enemy": float((state.n_enemies == 1).mean()),
            "no_enemy": float((state.n_enemies == 0).mean()), "enemies_2+": float((state.n_enemies >= 2).mean()),
            "one_player": float((state.n_players == 1).mean()), "one_coin": float((state.n_coins == 1).mean())}


@torch.no_grad()
def teacher_context(cfg: OneStepConfig, model: worldmodel.WorldModel, data: LatentData) -> dict[str, float]:
    """Teacher x0 of the last frame at `sigma` after clean real frames: entity cells equal to the real ones."""
    teacher, autoencoder, clean, actions, events, generator = model_and_clips(cfg, model, data, cfg.clips)
    got = read_state(autoencoder.decode(last_frame_x0(teacher, clean, actions, events, cfg.sigma, cfg.guidance,
                                                      generator)).numpy())
    real = read_state(autoencoder.decode(clean[:, -1]).numpy())
    return {name: float((getattr(got, name) == getattr(real, name)).all(1).mean())
            for name in ("player", "coin", "enemy")}


def main(cfg: OneStepConfig) -> dict:
    model, data = worldmodel.load(cfg.checkpoint), load_latents(Path(cfg.latents))     # each read once
    teacher = worldmodel.load(cfg.teacher) if cfg.teacher else None
    configs = [m.dit.config for m in (model, teacher) if m is not None]
    for episodes in (data.train, data.val):    # the true player cells of models with that channel (true_events)
        add_dit_cells(episodes, any(c.player_channel for c in configs))
    result = {"checkpoint": cfg.checkpoint, "sigma": cfg.sigma, "one_step": one_step_exact(cfg, model, data),
              "terminal_exact": terminal_exact(cfg, model, data), "rollout_exact": rollout_exact(cfg, model)}
    if teacher is not None:
        result["teacher_samples"] = teacher_one_of_each(cfg, teacher, data)
        result["teacher_context"] = teacher_context(cfg, teacher, data)
        result["teacher_terminal_exact"] = terminal_exact(cfg, teacher, data)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    from train.common.cli import hydra_main

    hydra_main("one_step", OneStepConfig, main)
