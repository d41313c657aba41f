"""Every part in its own room: the imports between the repo's four parts only go one way.

    Model (worldmodel/)  knows no game, trainer or screen
    Games (envs/)        may use the model; knows no trainer and no viewer
    Trainers (train/)    may use the model and the games; not the viewer
    Viewer (viewer/, play.py)

Every import statement of every module (top level or inside a function, absolute or relative) is
read with `ast`, so a lazy import counts too.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("worldmodel", "envs", "train", "viewer")
FORBIDDEN = {
    "worldmodel": {"envs", "train", "viewer", "play"},
    "envs": {"train", "viewer", "play"},
    "train": {"viewer", "play"},
}
# Edges that exist today and are on their way out; an entry whose edge is gone fails the test, so this only shrinks.
PENDING: dict[tuple[str, str], str] = {}


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_parts(path: Path) -> dict[str, int]:
    """Top-level names imported by the module at `path` (relative imports resolved), each with a line number."""
    package = path.relative_to(REPO).parent.parts
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # from . import x / from ..y import z
                base = package[:len(package) - node.level + 1]
                names = [".".join((*base, node.module or ""))]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


def forbidden_edges(package: str) -> dict[tuple[str, str], str]:
    edges = {}
    for path in modules(package):
        for part, line in imported_parts(path).items():
            if part in FORBIDDEN.get(package, ()):
                edges[(str(path.relative_to(REPO)), part)] = f"{path.relative_to(REPO)}:{line} imports {part}"
    return edges


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_part_imports_a_part_it_must_not_know(package):
    assert modules(package), f"no modules found under {package}/"
    edges = forbidden_edges(package)
    unexpected = [where for edge, where in edges.items() if edge not in PENDING]
    assert not unexpected, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(unexpected)
    gone = [edge for edge in PENDING if edge[0].startswith(package + "/") and edge not in edges]
    assert not gone, f"these edges are gone, drop them from PENDING: {gone}"


def test_the_checker_sees_relative_lazy_and_nested_imports(tmp_path, monkeypatch):
    module = tmp_path / "envs" / "sub" / "m.py"
    module.parent.mkdir(parents=True)
    module.write_text("import numpy\nfrom .. import coinchase\n\n"
                      "def f():\n    from train.common.loop import x\n    import viewer.app\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert imported_parts(module) == {"numpy": 1, "envs": 2, "train": 5, "viewer": 6}


def loaded_after(statement: str) -> set[str]:
    """Top-level module names loaded by a fresh interpreter after `statement`."""
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_importing_the_games_loads_no_viewer_no_trainer_and_no_pygame():
    loaded = loaded_after("import envs, envs.world_model_env, envs.policies, envs.recording, envs.video")
    assert not loaded & {"viewer", "play", "train", "pygame"}


def test_importing_the_model_loads_no_game_no_trainer_and_no_viewer():
    loaded = loaded_after("import worldmodel, worldmodel.rollout, worldmodel.data, worldmodel.metrics")
    assert not loaded & {"envs", "viewer", "play", "train", "pygame"}
