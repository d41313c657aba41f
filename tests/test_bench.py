"""The speed benchmark (train/bench/run.py) in quick mode on CPU: every section is measured in one run,
its figures are positive and finite, the markdown report and its JSON twin are written."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.bench import run as bench
from train.bench.common import BenchConfig
from train.common.cli import compose

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## Ratios", "## a. Game", "## b. Model", "## c. Peer", "## d. Training speed")


def quick(tmp_path: Path, *overrides: str) -> BenchConfig:
    return compose("bench", BenchConfig, ["quick=true", f"markdown_path={tmp_path / 'bench.md'}",
                                          f"json_path={tmp_path / 'bench.json'}", *overrides])


def numbers(tree) -> list[float]:
    """Every number in a JSON tree."""
    if isinstance(tree, dict):
        return [x for value in tree.values() for x in numbers(value)]
    if isinstance(tree, list):
        return [x for value in tree for x in numbers(value)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of every section; the peer is skipped (no DIAMOND_SRC)."""
    tmp = tmp_path_factory.mktemp("bench")
    saved = os.environ.pop("DIAMOND_SRC", None)
    try:
        bench.main(quick(tmp))
    finally:
        if saved is not None:
            os.environ["DIAMOND_SRC"] = saved
    return (tmp / "bench.md").read_text(), json.loads((tmp / "bench.json").read_text())


def test_quick_report_has_every_section_and_labels_the_device(quick_run):
    text, fig = quick_run
    for heading in SECTIONS:
        assert heading in text
    assert fig["device"].startswith("cpu: ") and fig["device"] in text
    assert "quick" in text
    assert "nan" not in text.lower() and "inf " not in text.lower()


def test_the_model_section_names_the_decoder_architecture_whose_flops_it_counts(quick_run):
    text, fig = quick_run
    assert fig["model"]["decoder"] == "conv" and "(conv decoder)" in text


def test_every_figure_is_finite_and_the_headline_ones_positive(quick_run):
    _, fig = quick_run
    assert all(math.isfinite(x) for x in numbers({k: fig[k] for k in ("game", "model", "training")}))
    game, model, training = fig["game"], fig["model"], fig["training"]
    assert game["steps_per_s"] > 0 and game["record_steps_per_s"] > 0
    assert all(ms > 0 for row in model["ms_per_frame"].values() for ms in row.values())
    assert set(model["ms_per_frame"]) == {"1", "16"} and set(model["ms_per_frame"]["1"]) == {"1", "2", "3", "4"}
    for bound in model["flop_bound"].values():
        assert bound["flops_dit"] > 0 and bound["flops_decode"] > 0 and bound["ratio"] > 0 and 0 < bound["mfu"]
    assert all(v["total_ms"] > 0 and v["decode_ms"] > 0 for v in model["latency"].values())
    assert model["horizon"]["time_ratio"] > 0 and model["horizon"]["memory_ratio"] > 0
    assert set(model["vector_fps"]) == {"16", "64"} and all(v["fps"] > 0 for v in model["vector_fps"].values())
    assert set(model["dtypes"]) == {"1", "2"} and model["dtypes"]["1"]["auto"] == "float32"
    assert all(v["float32"] > 0 and v["bfloat16"] > 0 for v in model["dtypes"].values())
    assert model["matmul_gflops"] > 0
    assert set(training["stages"]) == {"teacher", "tf", "df", "ode_init", "self_forcing", "self_forcing critic_reuse=2"}
    for stage in training["stages"].values():
        assert stage["it_per_s"] > 0 and stage["gflops_per_it"] > 0 and stage["peak_memory_mb"] >= 0
    assert set(training["sf_over_tf"]) == {"1", "2"} and all(r > 0 for r in training["sf_over_tf"].values())
    assert training["sf_generator_over_tf"] > 0


def test_the_flops_of_a_frame_grow_with_denoising_steps(quick_run):
    _, fig = quick_run
    dit = [fig["model"]["flop_bound"][s]["flops_dit"] for s in ("1", "2", "3", "4")]
    assert dit == sorted(dit) and dit[0] < dit[-1]
    decode = {fig["model"]["flop_bound"][s]["flops_decode"] for s in ("1", "2", "3", "4")}
    assert len(decode) == 1, "decoding costs the same whatever the step count"


def test_the_peer_is_skipped_without_diamond_src(quick_run):
    text, fig = quick_run
    assert "DIAMOND_SRC" in fig["peer"]["skipped"] and "Skipped" in text


def test_peer_json_line_is_put_beside_ours_as_ratios(tmp_path, monkeypatch):
    script = tmp_path / "fake_peer.py"
    script.write_text("import json, sys\nprint('loading')\nprint(json.dumps({'peer': 'fake', 'params_m': 1.0, "
                      "'steps': 3, 'threads': int(sys.argv[2]), 'ms_per_frame_b1': 2.0, 'ms_per_frame_b16': 0.5}))\n")
    monkeypatch.setenv("DIAMOND_SRC", str(tmp_path))
    fig = bench.main(quick(tmp_path, "game=false", "model=false", "training=false", f"peer_script={script}"))
    peer = fig["peer"]
    assert peer["peer"]["threads"] == 1
    for batch, peer_ms in ((1, 2.0), (16, 0.5)):
        assert peer["ours_over_peer"][batch] == pytest.approx(peer["ours_ms_per_frame"][batch] / peer_ms)
    text = (tmp_path / "bench.md").read_text()
    assert "## c. Peer" in text and "## b. Model" not in text and "## a. Game" not in text
    assert "our ms/frame ÷ DIAMOND's (batch 16)" in text


def test_a_failing_peer_is_reported_not_raised(tmp_path, monkeypatch):
    script = tmp_path / "broken_peer.py"
    script.write_text("import sys\nsys.exit('no model here')\n")
    monkeypatch.setenv("DIAMOND_SRC", str(tmp_path))
    fig = bench.run(quick(tmp_path, "game=false", "model=false", "training=false", f"peer_script={script}"))
    assert "no model here" in fig["peer"]["skipped"]


def test_config_refuses_unknown_stages_and_a_missing_batch_1():
    with pytest.raises(ValueError, match="unknown stages"):
        BenchConfig(stages=["teacher", "gan"])
    with pytest.raises(ValueError, match="must include 1"):
        BenchConfig(batch_sizes=[16])


def test_command_line_runs_one_section(tmp_path):
    done = subprocess.run([sys.executable, "-m", "train.bench", "quick=true", "model=false", "peer=false",
                           "training=false",
                           f"markdown_path={tmp_path / 'g.md'}", f"json_path={tmp_path / 'g.json'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "## a. Game" in done.stdout and "CoinChase steps/s" in done.stdout
    assert json.loads((tmp_path / "g.json").read_text())["game"]["steps_per_s"] > 0


def test_the_quick_bench_runs_on_a_checkpoint_of_any_game_and_times_its_real_game(tmp_path):
    from train.common.untrained import save_untrained

    path = save_untrained(tmp_path / "catch", env_id="dreamgym/Catch-v0")
    fig = bench.main(quick(tmp_path, f"checkpoint={path}", "training=false", "kernels=false", "peer=false"))
    game, model = fig["game"], fig["model"]
    assert game["env_id"] == "dreamgym/Catch-v0" and game["steps_per_s"] > 0 and game["record_steps_per_s"] > 0
    assert model["checkpoint"] == str(path) and model["decoder"] == "conv"
    assert all(ms > 0 for row in model["ms_per_frame"].values() for ms in row.values())
    assert all(v["fps"] > 0 for v in model["vector_fps"].values()) and fig["profile"]
    assert all(math.isfinite(x) for x in numbers({k: fig[k] for k in ("game", "model")}))
    text = (tmp_path / "bench.md").read_text()
    assert "Catch steps/s (`dreamgym/Catch-v0`" in text and str(path) in text


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DIAMOND_SRC"), reason="needs DIAMOND_SRC (a checkout of eloialonso/diamond)")
def test_real_peer_runs_in_the_same_run(tmp_path):
    fig = bench.main(quick(tmp_path, "game=false", "model=false", "training=false"))
    assert fig["peer"]["peer"]["peer"] == "diamond-atari-denoiser"
    assert all(r > 0 for r in fig["peer"]["ours_over_peer"].values())
