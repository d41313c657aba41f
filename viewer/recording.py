"""What the viewer's F5 records: a Minari dataset (envs.recording.RecordMinari) and an mp4 of the same
frames (envs.video.RecordMp4) beside it, `<root>/<dataset_id>.mp4`, started and finished together.

`PlayRecording` is one such recording; `Recorder` is the F5 switch over one played env (one
recording at a time, each under a new dataset id). The mp4 holds exactly the dataset's
observations: n+1 frames per episode of n steps.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym

from envs.recording import RecordMinari
from envs.video import RecordMp4

VERSIONED_ID = re.compile(r"(?P<name>.+)-v(?P<version>\d+)")
DEFAULT_DATASETS = {"dream": "play/dream-v0", "real": "play/real-v0"}   # F5 without --record


def next_version(dataset_id: str, root: str | Path, taken: set[str]) -> str:
    """`dataset_id` with its -v<N> raised until no dataset of that id exists under `root` nor in `taken`."""
    match = VERSIONED_ID.fullmatch(dataset_id)
    if match is None:
        raise ValueError(f"dataset id {dataset_id!r} must end in -v<version>, e.g. 'play/dream-v0'")
    version = int(match["version"])
    while f"{match['name']}-v{version}" in taken or (Path(root) / f"{match['name']}-v{version}").exists():
        version += 1
    return f"{match['name']}-v{version}"


class PlayRecording:
    """Record `env` into a dataset and an mp4: step `self.env` (the wrapped env), then `finish()`.

    The first call must be `self.env.reset(...)`: a recording starts a new episode.
    """

    def __init__(self, env: gym.Env, dataset_id: str, root: str | Path, fps: float, scale: int, overwrite: bool,
                 algorithm_name: str, metadata: dict[str, Any]):
        self.dataset_id = dataset_id
        self.recorder = RecordMinari(env, dataset_id, root, overwrite=overwrite, algorithm_name=algorithm_name,
                                     metadata=metadata)
        try:
            self.env = RecordMp4(self.recorder, Path(root) / f"{dataset_id}.mp4", fps, scale, overwrite)
        except BaseException:
            self.recorder.abort()
            raise

    @property
    def steps(self) -> int:
        return self.recorder.total_steps

    def finish(self) -> str:
        """Write the dataset and the mp4 (the env stays open); returns a one-line report."""
        steps = self.steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "no step was recorded": reported in the returned line
            dataset = self.recorder.finalize()
        if dataset is None:
            self.env.abort()
            return f"nothing recorded for {self.dataset_id}"
        return f"saved {self.dataset_id} ({steps} steps) and {self.env.finalize()}"


class Recorder:
    """F5 over one played env: `toggle` starts a recording under the next free version of `base_id`, or
    finishes the open one. Step `stepper` (the env, or the recording wrapped around it): a recording
    starts with the next reset (a dataset holds whole episodes)."""

    def __init__(self, env: gym.Env, base_id: str, root: str | Path, fps: float, scale: int, overwrite: bool,
                 algorithm_name: str):
        self.env, self.base_id, self.root = env, base_id, root
        self.fps, self.scale, self.overwrite, self.algorithm_name = fps, scale, overwrite, algorithm_name
        self.recording: PlayRecording | None = None
        self.taken: set[str] = set()   # ids recorded since the viewer started

    @property
    def stepper(self) -> gym.Env:
        return self.env if self.recording is None else self.recording.env

    @property
    def dataset_id(self) -> str | None:
        return None if self.recording is None else self.recording.dataset_id

    @property
    def steps(self) -> int:
        return 0 if self.recording is None else self.recording.steps

    def start(self, dataset_id: str, metadata: dict[str, Any]) -> str:
        """Record under exactly `dataset_id` (FileExistsError / ValueError if it cannot); returns a notice."""
        self.recording = PlayRecording(self.env, dataset_id, self.root, self.fps, self.scale, self.overwrite,
                                       self.algorithm_name, metadata)
        self.taken.add(dataset_id)
        return f"recording {dataset_id}"

    def stop(self) -> str:
        """Finish the open recording (write the dataset and the mp4); returns a notice."""
        recording, self.recording = self.recording, None
        return recording.finish()

    def toggle(self, metadata: dict[str, Any]) -> str:
        """Finish the open recording, or start one under the next free id; returns a notice either way."""
        if self.recording is not None:
            return self.stop()
        try:
            return self.start(next_version(self.base_id, self.root, self.taken), metadata)
        except (FileExistsError, ValueError) as error:
            return f"cannot record: {error}"
