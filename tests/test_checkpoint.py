"""Checkpoints: safetensors + JSON round trip; every broken case is refused with the file named."""
import json
import shutil

import pytest
import torch

from worldmodel import CheckpointError, checkpoint, load
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, WorldModelConfig, dit_preset
from worldmodel.dit import DiT


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    ae_config = AutoencoderConfig(frame_size=16, latent_channels=4, widths=(8, 8, 8))
    config = WorldModelConfig(autoencoder=ae_config, dit=dit_preset("tiny", latent_channels=4, latent_size=2, patch=1),
                              latent_scale=1.7, stage="test")
    ae, dit = Autoencoder(ae_config), DiT(config.dit)
    with torch.no_grad():
        dit.out.weight.normal_()
    frames = torch.randint(0, 255, (3, 2, 16, 16, 3), dtype=torch.uint8)
    actions = torch.randint(0, 5, (3, 2))
    path = checkpoint.save(tmp_path / "ckpt", config, ae, dit, frames, actions)
    return path, ae, dit, frames, actions


def test_checkpoint_round_trip_restores_weights_config_and_start_bank(saved):
    path, ae, dit, frames, actions = saved
    model = load(path)
    assert model.config.latent_scale == 1.7 and model.config.stage == "test"
    assert model.config.dit == dit.config
    assert torch.equal(model.dit.out.weight, dit.out.weight)
    assert torch.equal(model.autoencoder.decoder[0].weight, ae.decoder[0].weight)
    assert torch.equal(model.start_frames, frames) and torch.equal(model.start_actions, actions)
    assert not list(path.parent.glob(".ckpt.tmp-*"))


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_directory_without_config_is_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load(tmp_path / "empty")


def test_corrupt_weights_are_refused_naming_the_file(saved):
    path = saved[0]
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt"):
        load(path)


def test_missing_weights_file_is_refused(saved):
    path = saved[0]
    (path / "autoencoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match="autoencoder.safetensors: missing"):
        load(path)


def test_weights_that_do_not_match_the_config_are_refused(saved):
    path = saved[0]
    meta = json.loads((path / "config.json").read_text())
    meta["dit"]["dim"] = 64
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match the config"):
        load(path)


def test_unreadable_config_is_refused(saved):
    path = saved[0]
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        load(path)


def test_saving_over_an_existing_checkpoint_replaces_it_whole(saved, tmp_path):
    path, ae, dit, frames, actions = saved
    other = tmp_path / "copy"
    shutil.copytree(path, other)
    model = load(other)
    checkpoint.save(other, model.config, model.autoencoder, None)
    reloaded = load(other)
    assert reloaded.dit is None and reloaded.start_frames is None


def test_bundle_stores_half_weights_that_load_back_as_float32(tmp_path):
    from train.bundle import BundleConfig, bundle
    from train.common.untrained import save_untrained

    src = save_untrained(tmp_path / "src", bank=4)
    dst = bundle(BundleConfig(src=str(src), dst=str(tmp_path / "dst"), bank=2))
    full, small = load(src), load(dst)
    assert small.dit.out.weight.dtype == torch.float32 and len(small.start_frames) == 2
    torch.testing.assert_close(small.dit.out.weight, full.dit.out.weight, rtol=1e-3, atol=1e-4)
    assert (dst / "model.safetensors").stat().st_size < 0.6 * (src / "model.safetensors").stat().st_size
