"""The score bar as explicit state: painted from the score, read back, advanced by the step's reward.

Specification: a score shows as its last `digits` digits; painting replaces the bar's latent rows only
(the rest keeps its values and gradient); every generated frame's bar shows the previous frame's score
plus the step's rounded reward; a frame's training label is the sum of its episode's rewards before it;
the stage learns to paint and read a bar whose look is a function of the score, so that every score
reads back exactly what was painted, and to draw the bar's pixels exactly; installing keeps the DiT's
weights and needs an event model with outcomes (the reward must be known before the frame is written).
"""
import shutil

import numpy as np
import pytest
import torch

import worldmodel
from train.common.loop import TrainState
from train.stages import score_bar as stage
from worldmodel.config import dit_preset
from worldmodel.data import Episode
from worldmodel.rollout import new_cache, next_chunk, prime
from worldmodel.score_bar import ScoreBar, ScoreBarConfig, load_score_bar, save_score_bar

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_score_shows_as_its_last_digits_most_significant_first():
    bar = ScoreBar(latent_channels=4, latent_size=4, digits=3)
    assert bar.to_digits(torch.tensor([0, 7, 42, 1234, 999])).tolist() == [[0, 0, 0], [0, 0, 7], [0, 4, 2], [2, 3, 4],
                                                                          [9, 9, 9]]


def test_painting_replaces_the_bar_rows_only_and_keeps_the_rest_differentiable():
    bar = ScoreBar(latent_channels=4, latent_size=4, digits=2, rows=1)
    frames = torch.randn(3, 4, 4, 4, requires_grad=True)
    scores = torch.tensor([1, 20, 99])
    painted = bar.paint(frames, scores)
    assert torch.equal(painted[:, :, 1:], frames[:, :, 1:])
    assert torch.equal(painted[:, :, :1], bar.bar(scores))
    painted.sum().backward()
    assert torch.equal(frames.grad[:, :, 1:], torch.ones(3, 4, 3, 4)) and not frames.grad[:, :, :1].any()


def test_a_score_bar_needs_the_reward_before_the_frame_is_written():
    with pytest.raises(ValueError, match="event_outcomes"):
        dit_preset("tiny", latent_channels=4, latent_size=4, patch=1, event_channels=2, score_digits=2)


def test_each_generated_frame_shows_the_last_score_plus_the_rounded_reward(perturbed_model):
    model = perturbed_model(event_channels=2, event_outcomes=True, score_digits=2, chunk=1, window=3)
    g = torch.Generator().manual_seed(0)
    noise = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
    cache = new_cache(model, 2)
    prime(model, cache, torch.randn(2, 2, 4, 4, 4), torch.tensor([[5, 1], [5, 2]]))
    for _ in range(3):
        previous = cache.previous.clone()
        result = next_chunk(model, cache, torch.tensor([[3], [4]]), [1.0, 0.5], noise, event_min_prob=0.0)
        score = model.score_bar.read(previous) + torch.round(result.reward[:, 0]).long()
        assert torch.equal(result.score[:, 0], score)
        assert torch.equal(result.latents[:, 0, :, :1], model.score_bar.bar(score))
        assert torch.equal(cache.previous, result.latents[:, -1])          # the cache holds the painted frame


def test_a_frames_label_is_the_sum_of_its_episodes_rewards_before_it():
    episode = Episode(frames=np.zeros((5, 1, 1, 1), np.float32), actions=np.zeros(4, np.int64),
                      rewards=np.array([0.0, 1.0, 0.0, 1.0]), terminations=np.zeros(4, bool),
                      truncations=np.zeros(4, bool))
    assert stage.scored_frames([episode, episode], None, 0).scores.tolist() == [0, 0, 1, 1, 2] * 2


def synthetic_frames(n: int, seed: int) -> stage.ScoredFrames:
    """4-channel 4x4 latents whose top row is a fixed code per (place, digit) plus a little noise; the rest is noise."""
    codes = torch.randn(2, 10, 4, 1, 4, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(100, (n,), generator=g)
    latents = torch.randn(n, 4, 4, 4, generator=g)
    latents[:, :, :1] = codes[0, scores // 10] + codes[1, scores % 10] + 0.02 * torch.randn(n, 4, 1, 4, generator=g)
    return stage.ScoredFrames(latents, scores, torch.zeros(n, 0, 0, 3, dtype=torch.uint8))


def test_the_stage_learns_to_paint_and_read_every_score():
    cfg = stage.ScoreBarStageConfig(digits=2, dim=64, batch_size=128, lr=3e-3, read_noise=0.0)
    cfg.loop.max_steps = 1500
    config = ScoreBarConfig(latent_channels=4, latent_size=4, digits=2, dim=64)
    torch.manual_seed(0)
    bar = config.build()
    state = TrainState(modules={"score_bar": bar}, optimizers={"score_bar": torch.optim.AdamW(bar.parameters())},
                       generator=torch.Generator().manual_seed(0))
    train, val = synthetic_frames(2000, seed=1), synthetic_frames(500, seed=2)
    first = stage.evaluate(state, val, 99, cfg)
    for _ in range(cfg.loop.max_steps):
        stage.train_step(state, train, 99, cfg)
        state.step += 1
    last = stage.evaluate(state, val, 99, cfg)
    assert last["round_trip_exact"] == 1.0 and last["val_read_exact"] >= 0.98
    assert last["val_paint_mse"] < 0.05 * first["val_paint_mse"]


def test_the_glyphs_learn_to_draw_every_bar_exactly():
    """A bar whose pixels are a function of the score (one glyph per place and digit): drawn right after training."""
    g = torch.Generator().manual_seed(0)
    glyphs = torch.randint(0, 2, (2, 10, 8, 8), generator=g, dtype=torch.uint8) * 250       # (place, digit, P, 8 px)
    scores = torch.arange(100).repeat(4)
    bars = torch.zeros(len(scores), 8, 32, 3, dtype=torch.uint8)
    bars[:, :, 16:24] = glyphs[0, scores // 10][..., None]
    bars[:, :, 24:32] = glyphs[1, scores % 10][..., None]
    config = ScoreBarConfig(latent_channels=4, latent_size=4, digits=2, dim=64, bar_pixels=8)
    torch.manual_seed(0)
    bar = config.build()
    state = TrainState(modules={"score_bar": bar}, optimizers={"score_bar": torch.optim.Adam(bar.parameters(), 3e-3)},
                       generator=g, scratch={"hud": torch.ones(1, 1, 8, 32, dtype=torch.bool)})
    cfg = stage.ScoreBarStageConfig(digits=2)
    latents = torch.zeros(len(scores), 4, 4, 4)
    assert not stage.bar_right(bar.bar_image(scores), bars).any()
    for _ in range(300):
        loss = stage.bar_loss(state, latents, scores, bars, cfg)
        state.optimizers["score_bar"].zero_grad()
        loss.backward()
        state.optimizers["score_bar"].step()
    with torch.no_grad():
        assert stage.bar_right(bar.bar_image(scores), bars).all()
        frames = torch.full((3, 32, 32, 3), 7, dtype=torch.uint8)
        drawn = bar.draw(frames, torch.tensor([5, 42, 99]))
    assert torch.equal(drawn[:, 8:], frames[:, 8:])                       # below the bar: the decoder's pixels
    ones = drawn[1, :8, 24:32, 0].int() - glyphs[1, 2].int()              # the ones digit of 42, drawn
    assert ones.abs().max() <= stage.BAR_TOLERANCE


def test_installing_keeps_the_dit_and_needs_event_outcomes(tmp_path, untrained_checkpoint):
    from train.stages.events import install as install_events
    from worldmodel.events import EventModel, EventModelConfig, save_event_model

    target = tmp_path / "ckpt"
    shutil.copytree(untrained_checkpoint, target)
    config = ScoreBarConfig(latent_channels=8, latent_size=8, digits=3, bar_pixels=8)
    bar_dir = tmp_path / "bar"
    bar_dir.mkdir()
    torch.manual_seed(1)
    bar = config.build()
    save_score_bar(bar_dir, bar, config)
    assert torch.equal(load_score_bar(bar_dir)[0].state_dict()["painter.0.weight"],
                       bar.state_dict()["painter.0.weight"])
    with pytest.raises(ValueError, match="event_outcomes"):
        stage.install(bar_dir, [str(target)])
    dit = worldmodel.load(target).dit
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    save_event_model(events_dir, EventModel.from_config(EventModelConfig(8, 8, 5, 2, dit.config.event_dim,
                                                                         dit.config.event_depth, outcomes=True)),
                     EventModelConfig(8, 8, 5, 2, dit.config.event_dim, dit.config.event_depth, outcomes=True))
    install_events(events_dir, [str(target)])
    before = worldmodel.load(target).dit
    stage.install(bar_dir, [str(target)])
    after = worldmodel.load(target).dit
    assert after.config.score_digits == 3 and not any(p.requires_grad for p in after.score_bar.parameters())
    for name, value in bar.state_dict().items():
        assert torch.equal(after.score_bar.state_dict()[name], value)
    for name, value in before.state_dict().items():
        assert torch.equal(after.state_dict()[name], value)
    from envs.dream import DreamCore

    core = DreamCore(target, num_envs=2, denoise_steps=1)
    frames, actions = core.start_context(0)
    core.reset_rows(np.arange(2), [0, 1], np.stack([frames] * 2), np.stack([actions] * 2))
    shown = core.step(np.array([1, 4])).frames
    with torch.no_grad():
        score = core.dit.score_bar.read(core.cache.previous)
        assert torch.equal(torch.from_numpy(shown), core.dit.score_bar.draw(torch.from_numpy(shown), score))
