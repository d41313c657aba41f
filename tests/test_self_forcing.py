"""Self Forcing's parts: DMD / SiD / GAN move a one-step student toward the teacher's distribution,
a real Self Forcing iteration keeps gradients through exactly one denoising step per frame with a
detached cache, and two gloo ranks make the same update as one process with the doubled batch."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from train.common.dit_stage import DiTStageConfig, flow_loss, optimizer_step
from train.common.loop import TrainState
from train.common.losses import DiscriminatorHead, dmd_loss, gan_discriminator_loss, gan_generator_loss, sid_loss
from train.stages.self_forcing import SelfForcingConfig, self_rollout
from worldmodel.config import dit_preset
from worldmodel.dit import DiT
from worldmodel.flow import add_noise

TARGET_MEAN, TARGET_STD = torch.tensor([2.0, -1.0]), 0.5


def gaussian_x0(x: torch.Tensor, sigma: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_sigma] for x0 ~ N(mean, std^2) under x_sigma = (1 - sigma) x0 + sigma noise (exact)."""
    a = 1.0 - sigma
    gain = a * std ** 2 / (a ** 2 * std ** 2 + sigma ** 2)
    return mean + gain * (x - a * mean)


def w2_to_target(samples: torch.Tensor) -> float:
    """2-Wasserstein distance between the samples' diagonal Gaussian fit and the target."""
    return float(((samples.mean(0) - TARGET_MEAN) ** 2).sum() + ((samples.std(0) - TARGET_STD) ** 2).sum()) ** 0.5


def train_one_step_student(loss_name: str, steps: int = 300) -> tuple[float, float]:
    """An affine one-step student x = a + b * z, trained by one distribution-matching loss."""
    torch.manual_seed(0)
    offset, log_scale = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([offset, log_scale], lr=0.05)
    lift = torch.nn.Linear(2, 32).requires_grad_(False)      # stands in for the critic's features
    disc = DiscriminatorHead(32)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=1e-2, betas=(0.0, 0.99))
    sample = lambda n: offset + log_scale.exp() * torch.randn(n, 2)  # noqa: E731
    before = w2_to_target(sample(4096).detach())
    weight = torch.ones(256, 1)
    for _ in range(steps):
        x = sample(256)
        if loss_name == "gan":
            real = TARGET_MEAN + TARGET_STD * torch.randn(256, 2)
            features = lambda v: torch.tanh(lift(v))[:, None]  # noqa: E731   (B, T=1, D)
            d_loss = gan_discriminator_loss(disc(features(real)), disc(features(x.detach())), weight)
            disc_opt.zero_grad(), d_loss.backward(), disc_opt.step()
            loss = gan_generator_loss(disc(features(x)), weight)
        else:
            sigma = float(torch.empty(()).uniform_(0.05, 0.95))
            noisy = add_noise(x if loss_name == "sid" else x.detach(), torch.randn_like(x), torch.full((256,), sigma))
            real_x0 = gaussian_x0(noisy, sigma, TARGET_MEAN, torch.tensor(TARGET_STD))
            fake_x0 = gaussian_x0(noisy, sigma, x.detach().mean(0), x.detach().std(0))   # the ideal critic
            as5d = lambda t: t.view(256, 1, 2, 1, 1)  # noqa: E731   (B, T, C, h, w)
            loss = (dmd_loss if loss_name == "dmd" else sid_loss)(as5d(x), as5d(real_x0), as5d(fake_x0), weight)
        opt.zero_grad(), loss.backward(), opt.step()
    return before, w2_to_target(sample(4096).detach())


@pytest.mark.parametrize("loss_name", ["dmd", "sid", "gan"])
def test_distribution_matching_moves_a_one_step_student_to_the_teacher(loss_name):
    before, after = train_one_step_student(loss_name)
    assert after < 0.25 * before, f"{loss_name}: W2 to the target {before:.3f} -> {after:.3f}"


def test_a_self_forcing_iteration_keeps_grads_through_one_step_per_frame_and_detaches_the_cache(monkeypatch):
    import train.stages.self_forcing

    caches = []
    make_cache = train.stages.self_forcing.new_cache
    monkeypatch.setattr(train.stages.self_forcing, "new_cache",
                        lambda *a, **k: caches.append(make_cache(*a, **k)) or caches[-1])
    torch.manual_seed(0)
    model = DiT(dit_preset("tiny", latent_channels=4, latent_size=4, n_actions=5, causal=True, window=4))
    cfg = SelfForcingConfig(size="tiny", window=4, clip_frames=5, prefix_frames=1)
    grad_calls = []
    model.register_forward_hook(lambda m, args, out: grad_calls.append(out.velocity.requires_grad))
    batch = {"latents": torch.randn(2, 5, 4, 4, 4), "actions": torch.randint(0, 5, (2, 5))}
    for exit_step in range(cfg.sampler.max_steps):
        grad_calls.clear()
        clip, weight, _ = self_rollout(model, batch, cfg, exit_step, True, torch.Generator().manual_seed(1))
        generated = 4
        # per generated frame: exit_step + 1 denoising passes (the last with grads) + 1 no-grad cache write
        assert sum(grad_calls) == generated
        assert len(grad_calls) == 1 + generated * (exit_step + 2)    # + the no-grad prime of the prefix
        assert clip.requires_grad and weight[:, 0].eq(0).all() and weight[:, 1:].eq(1).all()
        clip.sum().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
        assert not any(layer.k.requires_grad or layer.v.requires_grad for layer in caches[-1].layers)


# ------------------------------------------------------------------ data parallel
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_update(batch: dict, rank_rows: slice) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = DiT(dit_preset("tiny", latent_channels=4, latent_size=4, n_actions=5, causal=False))
    with torch.no_grad():
        model.out.weight.normal_(0, 0.1)
    cfg = DiTStageConfig(size="tiny", grad_clip=0.5)
    state = TrainState({"model": model}, {"model": torch.optim.AdamW(model.parameters(), lr=1e-2)}, torch.Generator())
    out = model(batch["noisy"][rank_rows], batch["sigma"][rank_rows], batch["actions"][rank_rows])
    flow_loss(out.velocity, batch["latents"][rank_rows], batch["noise"][rank_rows]).backward()
    optimizer_step(state, cfg)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    latents, noise = torch.randn(4, 3, 4, 4, 4, generator=g), torch.randn(4, 3, 4, 4, 4, generator=g)
    sigma = torch.rand(4, 3, generator=g)
    return {"latents": latents, "noise": noise, "sigma": sigma, "actions": torch.randint(0, 6, (4, 3), generator=g),
            "noisy": add_noise(latents, noise, sigma)}


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        weights = _one_update(_batch(), slice(2 * rank, 2 * rank + 2))
        torch.save(weights, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_make_the_update_of_one_process_with_the_doubled_batch(tmp_path):
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _one_update(_batch(), slice(0, 4))
    for rank in range(2):
        ranked = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single.items():
            torch.testing.assert_close(ranked[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_sid_alpha_changes_the_gradient_when_scores_see_the_sample():
    torch.manual_seed(0)
    grads = []
    for alpha in (0.5, 1.0):
        x = torch.randn(64, 2, requires_grad=True)
        noisy = add_noise(x, torch.randn(64, 2, generator=torch.Generator().manual_seed(1)), torch.full((64,), 0.5))
        real_x0 = gaussian_x0(noisy, 0.5, TARGET_MEAN, torch.tensor(TARGET_STD))
        fake_x0 = gaussian_x0(noisy, 0.5, torch.zeros(2), torch.ones(2))
        as5d = lambda t: t.view(64, 1, 2, 1, 1)  # noqa: E731
        sid_loss(as5d(x), as5d(real_x0), as5d(fake_x0), torch.ones(64, 1), alpha).backward()
        grads.append(x.grad)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("reuse,rolled_out_at", [(1, list(range(10))), (2, [0, 2, 4, 5, 7, 9]), (5, [0, 4, 5, 9])])
def test_critic_reuse_shares_a_rollout_between_consecutive_critic_updates_only(tmp_path, monkeypatch, reuse,
                                                                               rolled_out_at):
    import train.stages.self_forcing
    from train.bench.common import BenchConfig
    from train.bench.training import synthetic_latents, write_dit_checkpoint
    from worldmodel.data import ClipDataset

    latents = synthetic_latents(BenchConfig(train_size="tiny"))
    cfg = SelfForcingConfig(size="tiny", batch_size=2, clip_frames=4, critic_ratio=5, critic_reuse=reuse,
                            teacher_dir=str(tmp_path / "teacher"), student_dir=str(tmp_path / "student"))
    for role, causal in (("teacher", False), ("student", True)):
        write_dit_checkpoint(tmp_path / role / "checkpoint", DiT(cfg.dit_config(latents, causal=causal)), latents)
    state = train.stages.self_forcing.build(cfg, latents)
    dataset = ClipDataset(latents.train, cfg.clip_frames, latents.n_actions)
    calls, rollout = [], train.stages.self_forcing.self_rollout
    monkeypatch.setattr(train.stages.self_forcing, "self_rollout", lambda *a: calls.append(state.step) or rollout(*a))
    for step in range(10):        # two cycles: critic updates at steps 0-3 and 5-8, the generator's at 4 and 9
        state.step = step
        assert np.isfinite(train.stages.self_forcing.train_step(state, dataset, cfg)["critic_flow"])
    assert calls == rolled_out_at  # the generator always rolls out afresh (it needs gradients through its own sample)


def test_the_distill_stages_share_one_config_and_the_stage_shapes_are_the_one_source(tmp_path):
    import dataclasses

    import train.stages.self_forcing
    from train.bench.common import BenchConfig
    from train.bench.training import synthetic_latents, write_dit_checkpoint
    from train.common.dit_stage import DistillStageConfig
    from train.stages.ode_init import ODEInitConfig

    for stage in (ODEInitConfig, SelfForcingConfig):
        assert issubclass(stage, DistillStageConfig)
        assert not {"prefix_frames", "teacher_dir", "guidance"} & set(stage.__annotations__)   # declared once
        cfg = stage()
        assert (cfg.prefix_frames, cfg.teacher_dir, cfg.guidance) == (1, "runs/game/teacher", 3.0)
    latents = synthetic_latents(BenchConfig(train_size="tiny"))
    cfg = SelfForcingConfig(size="tiny", clip_frames=4, teacher_dir=str(tmp_path / "teacher"),
                            student_dir=str(tmp_path / "student"))
    for role, causal in (("teacher", False), ("student", True)):
        write_dit_checkpoint(tmp_path / role / "checkpoint", DiT(cfg.dit_config(latents, causal=causal)), latents)
    assert DiT(cfg.dit_config(latents, causal=True)).config.sink == cfg.sink == 0
    for other in ({"window": 5}, {"chunk": 2}, {"sink": 1}):     # a student of other shapes than the config's
        with pytest.raises(ValueError, match="chunk/window/sink"):
            train.stages.self_forcing.build(dataclasses.replace(cfg, **other), latents)
