"""Hydra entry points of every train command: structured config dataclass in, typed object out.

Each command (the stages, pipeline, eval, bench, probe, rl, bundle) calls
`hydra_main("<name>", Config, main)`; `configs/<name>.yaml` picks the schema and overrides it. Hydra
does not change the working directory and writes its own files under the run directory, so every
path comes from the config.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")   # the repo's configs/
C = TypeVar("C")


def register_schema(name: str, schema: type) -> None:
    """Register `schema` as `<name>_schema` so the YAML can list it in its defaults."""
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)


def to_config(cfg: DictConfig, schema: type[C]) -> C:
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, schema), f"config did not build a {schema.__name__}"
    return obj


def hydra_main(name: str, schema: type[C], main: Callable[[C], Any]) -> None:
    """Run `main(config)` with hydra's command line (`key=value` overrides) over configs/<name>.yaml."""
    register_schema(name, schema)

    @hydra.main(config_path=CONFIG_DIR, config_name=name, version_base=None)
    def entry(cfg: DictConfig) -> None:
        try:
            main(to_config(cfg, schema))
        except (ValueError, FileNotFoundError, FileExistsError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    entry()


def compose(name: str, schema: type[C], overrides: list[str] | None = None) -> C:
    """The same config as the command line would build, for tests and the pipeline."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema(name, schema)
    if GlobalHydra.instance().is_initialized():   # inside a hydra_main (the pipeline): same config dir
        return to_config(hydra_compose(config_name=name, overrides=overrides or []), schema)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return to_config(hydra_compose(config_name=name, overrides=overrides or []), schema)
