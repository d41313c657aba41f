"""What the viewer can be told: `PlayConfig`, and the command line built from it.

Every setting is declared once, as a `PlayConfig` field with its default and help text; `build_parser`
turns the fields into flags (`side_by_side` -> `--side-by-side`, a bool -> a switch), so a default
cannot differ between Python and the command line. The checkpoint can also be given hydra-style,
`checkpoint=DIR`; every other trailing `key=value` goes to the env's constructor. A config that cannot
be played is refused when it is made (`ValueError`, which play.py reports as a usage error).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

from envs.policies import POLICY_NAMES
from viewer.overrides import parse_overrides

PLAYERS = ("human", *POLICY_NAMES)   # who plays: the keys, or a scripted policy of envs.policies
KEYLESS_PLAYERS = ("random",)        # the players that read nothing of the game, so they can play the dream
FLAG_OWNED = {"checkpoint": "--checkpoint", "denoise_steps": "--denoise-steps", "device": "--device",
              "render_mode": "(the viewer draws)"}   # env kwargs set by flags, not by key=value
CHECKPOINT_OVERRIDE = "checkpoint="   # the one hydra-style setting: checkpoint=PATH is --checkpoint PATH


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A PlayConfig field that is also a command-line flag (`argparse_kwargs`: type, choices, metavar)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class PlayConfig:
    """Everything the viewer can be told; `parse_args` fills it from the command line."""
    real: bool = option(False, "play the checkpoint's real game instead of the dream (default: the bundled CoinChase)")
    checkpoint: str | None = option(None, "world-model checkpoint dir, also as checkpoint=PATH "
                                    "(default: envs/checkpoints/coinchase)", metavar="PATH")
    denoise_steps: int | None = option(None, "denoising steps per frame, 1..max (default: the checkpoint's)", type=int)
    fps: float = option(15.0, "target frame rate", type=float)
    scale: int = option(8, "screen and video pixels per game pixel", type=int)
    device: str = option("cpu", "torch device of the world model")
    seed: int | None = option(None, "episode k resets with seed + k (default: random)", type=int)
    headless: bool = option(False, "no window, no waiting: play --frames N with --policy")
    frames: int | None = option(None, "stop after N frames (default: until quit)", type=int, metavar="N")
    policy: str = option("human", "who plays: human (keys) or a policy of envs.policies; only random plays the "
                         "dream, the others read the real game's state", choices=PLAYERS)
    side_by_side: bool = option(False, "start with the checkpoint's real game beside the dream (Tab)")
    video: str | None = option(None, "write every frame shown to this .mp4")
    record: str | None = option(None, "record a Minari dataset from the start (F5 toggles)", metavar="DATASET_ID")
    record_root: str = option("data/minari", "datasets root; a recording's mp4 goes beside its dataset")
    overwrite: bool = option(False, "replace an existing video or dataset")
    threads: int = option(0, "torch CPU threads, 0 = torch's choice; 1 is fastest on a busy 2-core machine", type=int)
    env_kwargs: dict[str, Any] = field(default_factory=dict)   # trailing key=value overrides for the env

    def __post_init__(self) -> None:
        if self.policy not in PLAYERS:
            raise ValueError(f"unknown policy {self.policy!r}; choose {', '.join(PLAYERS)}")
        if self.headless and (self.policy == "human" or self.frames is None):
            raise ValueError(f"--headless plays without keys: give --policy {'|'.join(POLICY_NAMES)} and --frames N")
        if self.policy not in ("human", *KEYLESS_PLAYERS) and not self.real:
            raise ValueError(f"the {self.policy} policy reads the real game's state: use --real, or --policy random")
        if self.side_by_side and self.real:
            raise ValueError("--side-by-side compares the dream with the real game: leave out --real")
        if self.fps <= 0 or self.scale < 1 or (self.frames is not None and self.frames < 1):
            raise ValueError(f"need --fps > 0, --scale >= 1 and --frames >= 1, "
                             f"got {self.fps}, {self.scale}, {self.frames}")

    @property
    def mode(self) -> str:
        return "real" if self.real else "dream"


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line of play.py: one flag per PlayConfig field, then `key=value` env overrides."""
    parser = argparse.ArgumentParser(prog="play.py", description=description,
                                     epilog="trailing key=value overrides go to the env constructor, "
                                            "e.g. max_episode_steps=500")
    for f in fields(PlayConfig):
        if "help" not in f.metadata:
            continue
        kwargs = {key: value for key, value in f.metadata.items() if key != "help"}
        flag = "--" + f.name.replace("_", "-")
        if f.default is False:
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            shown = "" if f.default is None or "(default" in f.metadata["help"] else " (default %(default)s)"
            parser.add_argument(flag, default=f.default, help=f.metadata["help"] + shown, **kwargs)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="env constructor overrides")
    return parser


def parse_args(argv: list[str] | None = None, description: str | None = None
               ) -> tuple[PlayConfig, argparse.ArgumentParser]:
    """The PlayConfig of a command line (a bad one exits with a usage error), and the parser for later errors."""
    parser = build_parser(description)
    args = parser.parse_intermixed_args(argv)
    options = {name: value for name, value in vars(args).items() if name != "overrides"}
    overrides = [item for item in args.overrides if not item.startswith(CHECKPOINT_OVERRIDE)]
    for item in args.overrides:
        if item.startswith(CHECKPOINT_OVERRIDE):
            path = item[len(CHECKPOINT_OVERRIDE):]
            if not path or options["checkpoint"] not in (None, path):
                parser.error(f"give the checkpoint once, as --checkpoint PATH or checkpoint=PATH (got {item!r} "
                             f"and --checkpoint {options['checkpoint']})" if path else "checkpoint= needs a path")
            options["checkpoint"] = path
    try:
        return PlayConfig(**options, env_kwargs=parse_overrides(overrides)), parser
    except ValueError as error:
        parser.error(str(error))
