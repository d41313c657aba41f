"""The RL results table: real-game score at one frame count, mean ± std over each row's seeds."""
import json

import pytest

from train.eval.rl_curves import RLCurvesConfig, main


def _run(path, rows):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _ppo(frames_scores):
    return [{"policy": "ppo", "frames": f, "real_score_mean": s} for f, s in frames_scores]


def test_table_and_curves_from_run_dirs(tmp_path):
    real = [_run(tmp_path / f"real{i}", _ppo([(0, 0.1), (100, 1.0 + i), (200, 2.0 + 2 * i)])) for i in range(2)]
    base = _run(tmp_path / "base", [{"policy": "random", "frames": 0, "real_score_mean": 0.2},
                                    {"policy": "seeker", "frames": 0, "real_score_mean": 9.0}])
    lines = main(RLCurvesConfig(names=["real game"], runs=[real], baselines=[base], frames=200,
                                out=str(tmp_path / "out" / "curves")))
    assert "| PPO | real game | 3.00 ± 1.00 (n = 2) | 2.00, 4.00 |" in lines
    assert any(line.startswith("| coin-seeker | — (0 frames) | 9.00 ± 0.00 (n = 1)") for line in lines)
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    assert (tmp_path / "out" / "curves.md").read_text().count("\n") == len(lines)


def test_a_run_without_an_evaluation_at_the_frames_is_refused(tmp_path):
    short = _run(tmp_path / "short", _ppo([(0, 0.1), (100, 0.5)]))
    with pytest.raises(ValueError, match="no evaluation at 200"):
        main(RLCurvesConfig(names=["dream"], runs=[[short]], frames=200, out=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="1 names for 2 groups"):
        RLCurvesConfig(names=["a"], runs=[[short], [short]])
