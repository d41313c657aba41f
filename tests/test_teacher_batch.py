"""How the teacher sees its clips: clean real prefixes, noise levels shared as ODE init and DMD noise a clip,
and the learning-rate schedule every DiT stage shares."""
import numpy as np
import pytest
import torch

from train.common.dit_stage import set_lr
from train.common.loop import TrainState
from train.stages.teacher import TeacherConfig, teacher_batch
from worldmodel.data import ClipDataset, Episode

N_ACTIONS = 5


def dataset(frames: int = 40) -> ClipDataset:
    rng = np.random.default_rng(0)
    episode = Episode(frames=rng.standard_normal((frames, 4, 8, 8)).astype(np.float32),
                      actions=rng.integers(0, N_ACTIONS, frames - 1), rewards=np.zeros(frames - 1, np.float32),
                      terminations=np.zeros(frames - 1, bool), truncations=np.zeros(frames - 1, bool))
    return ClipDataset([episode], 4, N_ACTIONS)


def state(step: int = 0) -> TrainState:
    model = torch.nn.Linear(1, 1)
    return TrainState({"model": model}, {"model": torch.optim.SGD(model.parameters(), lr=1.0)},
                      torch.Generator().manual_seed(0), step)


def test_every_clip_can_open_with_a_clean_prefix_and_share_one_noise_level():
    cfg = TeacherConfig(batch_size=64, clip_frames=4, clean_prefix_prob=1.0, shared_sigma_prob=1.0)
    batch = teacher_batch(state(), dataset(), cfg, null_action=N_ACTIONS)
    sigma, weight = batch["sigma"], batch["weight"]                         # (B, T) each
    assert torch.all(sigma[:, 0] == 0.0)                                    # at least one clean real frame
    for row_sigma in sigma:
        noised = row_sigma[row_sigma > 0]
        assert len(noised) >= 1 and torch.all(noised == noised[0])
    assert torch.all((weight > 0) <= (sigma > 0))                           # no loss on the clean prefix


def test_per_frame_noise_levels_by_default():
    batch = teacher_batch(state(), dataset(), TeacherConfig(batch_size=64, clip_frames=4, clean_prefix_prob=0.0),
                          null_action=N_ACTIONS)
    assert (batch["sigma"].std(dim=1) > 0).float().mean() > 0.9


def test_cosine_schedule_ends_at_lr_final():
    cfg = TeacherConfig(lr=1e-3, warmup_steps=10, lr_final=0.1)
    cfg.loop.max_steps = 110
    lrs = [set_lr(state(step), cfg) for step in (0, 9, 60, 110)]
    assert lrs[0] == 1e-4 and lrs[1] == 1e-3
    assert abs(lrs[2] - 1e-3 * 0.55) < 1e-9 and abs(lrs[3] - 1e-4) < 1e-12
    cfg.lr_final = 1.0
    assert set_lr(state(110), cfg) == 1e-3


def test_a_probability_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="shared_sigma_prob"):
        teacher_batch(state(), dataset(), TeacherConfig(shared_sigma_prob=1.5), null_action=N_ACTIONS)
