"""Hydra entry points of every train command: structured config dataclass in, typed object out.

Each command (the stages, pipeline, eval, bench, probe, rl, bundle) calls
`hydra_main("<name>", Config, main)`; `configs/<name>.yaml` picks the schema and overrides it. Hydra
does not change the working directory and writes its own files under the run directory, so every
path comes from the config. `--help` lists every field with its value and its help, which is the comment
beside the field in its dataclass (`field_help`); `--cfg job` prints the composed config.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Iterator
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


_FIELD = re.compile(r"^\s{4}(\w+):[^#]*?(?:#\s?(.*))?$")      # `    name: type = default  # help`
_MORE = re.compile(r"^\s+#\s+(.*)$")                          # a help comment's continuation line


def field_help(schema: type, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted field name, help) of a config dataclass and the dataclasses it nests, from the comments beside the
    fields in its source (the help a reader of the code sees is the help the command line shows)."""
    helps: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        current = None
        for line in inspect.getsource(cls).splitlines():
            field_match, more = _FIELD.match(line), _MORE.match(line)
            if field_match:
                current = field_match.group(1)
                helps[current] = (field_match.group(2) or "").strip()
            elif more and current:
                helps[current] += " " + more.group(1).strip()
            else:
                current = None
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from field_help(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", helps.get(f.name, "")


def print_help(name: str, schema: type, cfg: DictConfig | None = None) -> None:
    """The fields of command `name`, with their values (composed from configs/<name>.yaml) and help."""
    print(f"python -m ... {name} key=value ...  (configs/{name}.yaml; --cfg job prints the composed config)\n")
    for key, text in field_help(schema):
        value = OmegaConf.select(cfg, key) if cfg is not None else None
        shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        print(f"  {key} = {shown!r}" + (f"\n      {text}" if text else ""))


def hydra_main(name: str, schema: type[C], main: Callable[[C], Any]) -> None:
    """Run `main(config)` with hydra's command line (`key=value` overrides) over configs/<name>.yaml."""
    register_schema(name, schema)
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        overrides = [a for a in sys.argv[1:] if a not in ("--help", "-h")]
        from hydra import compose as hydra_compose, initialize_config_dir  # noqa: PLC0415

        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            print_help(name, schema, hydra_compose(config_name=name, overrides=overrides))
        return

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
