"""The cell decoder (AutoencoderConfig.decoder="cell") as a specification: what it outputs, which pixels a
latent cell draws, how configs choose it, how the decoder stage trains one from scratch behind a frozen
encoder, and how train.bundle swaps it into a world-model checkpoint."""
import json

import numpy as np
import pytest
import torch

from envs import BUNDLED_ENV_ID
from train.bundle import BundleConfig, bundle
from train.common.cli import compose
from train.common.loop import STATE_DIR
from train.common.untrained import save_untrained
from train.eval.decoders import DecodersConfig
from train.eval.decoders import main as compare_decoders
from train.stages import autoencoder, decoder
from train.stages.record import RecordConfig, record
from worldmodel import CheckpointError, checkpoint, load
from worldmodel.autoencoder import Autoencoder
from worldmodel.config import AutoencoderConfig, WorldModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(widths=(8, 8, 8), latent_channels=4, cell_width=8)


def test_cell_decoder_maps_latents_to_uint8_frames_of_the_frame_size():
    model = Autoencoder(AutoencoderConfig(frame_size=32, decoder="cell", **TINY)).eval()
    latents = torch.randn(2, 4, 4, 4)                                  # (B, C, h, w)
    frames = model.decode(latents)
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == torch.uint8
    assert model.encode(frames).shape == latents.shape


def test_without_blocks_each_latent_cell_draws_only_its_own_eight_by_eight_pixels():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(decoder="cell", cell_blocks=0, **TINY)).eval()
    latents = torch.randn(1, 4, 8, 8)
    moved = latents.clone()
    moved[0, :, 2, 5] += 1.0
    with torch.no_grad():
        changed = (model.decode_float(moved) - model.decode_float(latents)).abs().amax(1)[0] > 0   # (64, 64)
    outside = changed.clone()
    outside[16:24, 40:48] = False
    assert changed[16:24, 40:48].any() and not outside.any()


def test_the_cell_decoder_is_far_cheaper_than_the_conv_decoder():
    from train.eval.decoders import decode_cost

    conv, cell = (decode_cost(Autoencoder(AutoencoderConfig(decoder=name))) for name in ("conv", "cell"))
    assert cell["decode_mflop"] < conv["decode_mflop"] / 5


def test_an_unknown_decoder_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown autoencoder decoder 'pixels'; choose from"):
        AutoencoderConfig(decoder="pixels")


def _save_autoencoder(path, config: AutoencoderConfig) -> None:
    torch.manual_seed(0)
    checkpoint.save(path, WorldModelConfig(autoencoder=config), Autoencoder(config))


def test_a_checkpoint_written_before_the_decoder_field_loads_as_the_conv_decoder(tmp_path):
    _save_autoencoder(tmp_path / "old", AutoencoderConfig(**TINY))
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("decoder", "cell_width", "cell_blocks"):
        del meta["autoencoder"][key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    model = load(tmp_path / "old")
    assert model.autoencoder.config.decoder == "conv"
    assert any(isinstance(layer, torch.nn.ConvTranspose2d) for layer in model.autoencoder.decoder)


def test_a_checkpoint_naming_an_unknown_decoder_is_refused_with_its_file(tmp_path):
    _save_autoencoder(tmp_path / "bad", AutoencoderConfig(**TINY))
    meta = json.loads((tmp_path / "bad" / "config.json").read_text())
    meta["autoencoder"]["decoder"] = "pixels"
    (tmp_path / "bad" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="config.json.*unknown autoencoder decoder 'pixels'"):
        load(tmp_path / "bad")


@pytest.fixture(scope="module")
def tiny_autoencoder(tmp_path_factory):
    """A 4-episode recording and a (barely trained) tiny conv autoencoder with its latent cache."""
    root = tmp_path_factory.mktemp("cell")
    record(RecordConfig(env_id=BUNDLED_ENV_ID,
                        episodes=4, seed=3, max_episode_steps=24, dataset_id="test/cell-v0", root=str(root / "data"),
                        progress=False))
    autoencoder.main(compose("autoencoder", autoencoder.AutoencoderStageConfig, [
        "model.widths=[8,8,8]", "model.latent_channels=4", "batch_size=8", "start_bank_size=4", "eval_frames=16",
        f"data_root={root / 'data'}", "dataset_id=test/cell-v0", f"run_dir={root / 'ae'}", "loop.max_steps=2",
        "loop.eval_every=0", "loop.progress=false"]))
    return root


def _train_cell_decoder(root, steps: int) -> dict:
    return decoder.main(compose("decoder", decoder.DecoderStageConfig, [
        "decoder=cell", "cell_width=8", f"autoencoder_dir={root / 'ae'}", f"out_dir={root / 'cell'}",
        f"run_dir={root / 'cell_run'}", f"data_root={root / 'data'}", "dataset_id=test/cell-v0", "batch_size=4",
        "eval_frames=8", "lr_final=0.1", "latent_noise=0.2", f"loop.max_steps={steps}", "loop.eval_every=2",
        "loop.progress=false"]))


def test_decoder_stage_trains_a_new_cell_decoder_behind_the_frozen_encoder_and_resumes(tiny_autoencoder):
    root = tiny_autoencoder
    source_files = {f.name: f.read_bytes() for f in (root / "ae" / "checkpoint").iterdir()}
    metrics = _train_cell_decoder(root, steps=2)
    assert "eval/psnr" in metrics
    source, cell = load(root / "ae" / "checkpoint"), load(root / "cell")
    assert {f.name: f.read_bytes() for f in (root / "ae" / "checkpoint").iterdir()} == source_files   # not overwritten
    assert cell.config.autoencoder.decoder == "cell" and cell.config.autoencoder.cell_width == 8
    assert cell.config.latent_scale == source.config.latent_scale
    assert torch.equal(cell.start_frames, source.start_frames)
    kept = {k: v for k, v in source.autoencoder.state_dict().items() if not k.startswith("decoder.")}
    assert all(torch.equal(cell.autoencoder.state_dict()[k], v) for k, v in kept.items())   # encoder, latent scale
    assert cell.autoencoder.decode(torch.zeros(1, 4, 8, 8)).shape == (1, 64, 64, 3)
    _train_cell_decoder(root, steps=4)                                                       # resumes from step 2
    assert json.loads((root / "cell_run" / STATE_DIR / "state.json").read_text())["step"] == 4


def test_decoder_stage_refuses_a_latent_cache_of_another_encoder(tiny_autoencoder, tmp_path):
    import shutil

    shutil.copytree(tiny_autoencoder / "ae", tmp_path / "ae")
    model = load(tmp_path / "ae" / "checkpoint")
    with torch.no_grad():
        model.autoencoder.encoder[0].weight.add_(0.5)
    checkpoint.save(tmp_path / "ae" / "checkpoint", model.config, model.autoencoder, start_frames=model.start_frames,
                    start_actions=model.start_actions)
    with pytest.raises(ValueError, match="does not match the encoder"):
        decoder.main(compose("decoder", decoder.DecoderStageConfig, [
            "decoder=cell", f"autoencoder_dir={tmp_path / 'ae'}", f"out_dir={tmp_path / 'cell'}",
            f"run_dir={tmp_path / 'run'}", f"data_root={tiny_autoencoder / 'data'}", "dataset_id=test/cell-v0",
            "loop.max_steps=1", "loop.progress=false"]))


def test_decoders_are_compared_on_held_out_frames_read_back_as_game_state(tiny_autoencoder):
    root = tiny_autoencoder
    if not (root / "cell").exists():
        _train_cell_decoder(root, steps=2)
    results = compare_decoders(DecodersConfig(checkpoints=[str(root / "ae" / "checkpoint"), str(root / "cell")],
                                              dataset_id="test/cell-v0", data_root=str(root / "data"), frames=8))
    assert [r["decoder"] for r in results] == ["conv", "cell"] and all(r["frames"] == 8 for r in results)
    assert set(results[0]["agreement"]) == {"player", "coin", "enemy", "counts", "entities", "score"}
    assert all(0.0 <= v <= 1.0 for r in results for v in r["agreement"].values())
    assert results[1]["decode_mflop"] < results[0]["decode_mflop"]


def test_bundle_swaps_in_an_autoencoder_with_the_same_encoder_and_refuses_another(tmp_path):
    src = save_untrained(tmp_path / "src", widths=(8, 8, 8), bank=2)
    model = load(src)
    cell = Autoencoder(AutoencoderConfig(widths=(8, 8, 8), decoder="cell", cell_width=8))
    cell.load_state_dict({k: v for k, v in model.autoencoder.state_dict().items() if not k.startswith("decoder.")},
                         strict=False)
    checkpoint.save(tmp_path / "cell", WorldModelConfig(autoencoder=cell.config), cell)
    dst = bundle(BundleConfig(src=str(src), dst=str(tmp_path / "dst"), autoencoder=str(tmp_path / "cell")))
    swapped = load(dst)
    assert swapped.config.autoencoder.decoder == "cell" and swapped.config.dit == model.config.dit
    torch.testing.assert_close(swapped.dit.out.weight, model.dit.out.weight, rtol=1e-3, atol=1e-4)
    assert json.loads((dst / "SOURCE.json").read_text())["autoencoder"] == str(tmp_path / "cell")

    with torch.no_grad():
        cell.encoder[0].weight.mul_(2.0)
    checkpoint.save(tmp_path / "other", WorldModelConfig(autoencoder=cell.config), cell)
    with pytest.raises(ValueError, match="encoder or latent scale is not the source's"):
        bundle(BundleConfig(src=str(src), dst=str(tmp_path / "dst2"), autoencoder=str(tmp_path / "other")))


def test_the_hud_weight_weighs_the_changing_hud_pixels_lit_or_not_and_leaves_the_maze_alone():
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    frames[:3, 2, 52] = 250                       # a digit pixel, lit in 3 of 5 frames (so lit in the median frame)
    frames[4, 3, 53] = 250                        # another, lit in 1
    frames[:, 30, 30] = 200                       # a maze pixel that changes: not the HUD's
    frames[0, 30, 30] = 0
    images = Autoencoder.to_float(torch.from_numpy(frames))
    background = Autoencoder.to_float(torch.from_numpy(np.median(frames, axis=0).astype(np.uint8))[None])
    hud = decoder.hud_pixels(frames, background, hud_rows=8)
    assert hud.shape == (1, 1, 64, 64) and hud.sum() == 2 and hud[0, 0, 2, 52] and hud[0, 0, 3, 53]
    assert not decoder.hud_pixels(frames, background, hud_rows=0).any()
    plain = decoder.loss_weight(images, background, hud, decoder.DecoderStageConfig(sprite_weight=10.0))
    weighted = decoder.loss_weight(images, background, hud,
                                   decoder.DecoderStageConfig(sprite_weight=10.0, hud_rows=8, hud_weight=30.0))
    assert plain.shape == (5, 1, 64, 64)
    # sprite_weight alone: a digit pixel weighs 10 only in the frames where it is off the median (here: unlit)
    assert plain[:, 0, 2, 52].tolist() == [1.0, 1.0, 1.0, 10.0, 10.0]
    assert weighted[:, 0, 2, 52].tolist() == [30.0] * 5 and weighted[:, 0, 3, 53].tolist() == [30.0] * 5
    outside = ~hud.expand_as(plain)
    assert torch.equal(weighted[outside], plain[outside])                     # the bar's background and the maze


def test_latent_noise_has_a_random_strength_per_frame_up_to_latent_noise():
    latents = torch.zeros(64, 4, 8, 8)
    noised = decoder.noise_latents(latents, decoder.DecoderStageConfig(latent_noise=0.2),
                                   torch.Generator().manual_seed(0))
    per_frame = noised.flatten(1).std(1)
    assert (noised != 0).float().mean() > 0.99 and float(per_frame.max()) < 0.2 * 1.2
    assert float(per_frame.min()) < 0.05 < 0.15 < float(per_frame.max())          # strengths spread over (0, 0.2)
    assert torch.equal(decoder.noise_latents(latents, decoder.DecoderStageConfig(), torch.Generator()), latents)


def test_hud_options_need_hud_rows_and_sane_values():
    for bad in (dict(hud_weight=5.0), dict(hud_rows=8, hud_weight=0.5), dict(hud_rows=-1)):
        with pytest.raises(ValueError, match="hud"):
            decoder.DecoderStageConfig(**bad)


def test_decoder_stage_trains_with_a_weighted_and_quiet_hud(tiny_autoencoder):
    root = tiny_autoencoder
    metrics = decoder.main(compose("decoder", decoder.DecoderStageConfig, [
        "decoder=cell", "cell_width=8", f"autoencoder_dir={root / 'ae'}", f"out_dir={root / 'cell_hud'}",
        f"run_dir={root / 'cell_hud_run'}", f"data_root={root / 'data'}", "dataset_id=test/cell-v0", "batch_size=4",
        "eval_frames=8", "latent_noise=0.2", "hud_rows=8", "hud_weight=10",
        "loop.max_steps=2", "loop.eval_every=2", "loop.progress=false"]))
    assert "eval/psnr" in metrics and load(root / "cell_hud").config.autoencoder.decoder == "cell"


def test_the_autoencoder_stage_weighs_pixels_off_the_median_background_by_sprite_weight():
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[:, 10:14, 10:14] = 120                 # a wall in every frame: background
    frames[1, 20:24, 4:8] = 250                   # a ball in one frame: a sprite
    background = autoencoder.median_background(frames)
    assert background.shape == (1, 3, 32, 32)
    weight = autoencoder.sprite_loss_weight(Autoencoder.to_float(torch.from_numpy(frames)), background, 20.0)
    assert weight.shape == (5, 1, 32, 32)
    assert weight[1, 0, 20:24, 4:8].eq(20.0).all() and weight.eq(20.0).sum() == 16      # the ball alone
    with pytest.raises(ValueError, match="sprite_weight"):
        autoencoder.AutoencoderStageConfig(sprite_weight=0.5)
