"""Hydra-style `key=value` overrides for an env constructor, as play.py takes them on its command line.

Owns parsing the values (true/false, none/null, int, float, else string) and checking the keys
against the constructor's signature, with errors that name the bad key and the known ones.
"""
from __future__ import annotations

import inspect
from typing import Any


def parse_value(text: str) -> Any:
    """An override's value: true/false -> bool, none/null -> None, int, float, else the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["key=value", ...] -> {key: parsed value}; ValueError for an item without `=` or a repeated key."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"overrides look like key=value, got {item!r}")
        if key in kwargs:
            raise ValueError(f"override {key!r} given twice")
        kwargs[key] = parse_value(value)
    return kwargs


def check_kwargs(target: type, kwargs: dict[str, Any], owned: dict[str, str]) -> None:
    """Raise ValueError unless every key is a parameter of `target`'s constructor not in `owned`.

    `owned` maps parameters set another way (e.g. by a flag) to how to set them."""
    known = [name for name in inspect.signature(target).parameters if name not in owned]
    for key in kwargs:
        if key in owned:
            raise ValueError(f"override {key}= is set by {owned[key]}, not key=value")
        if key not in known:
            raise ValueError(f"unknown override {key!r} for {target.__name__}; known keys: {', '.join(known)}")
