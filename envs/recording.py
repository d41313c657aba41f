"""Recording any image + discrete-action Gymnasium env into a Minari dataset, crash safely.

Owns `RecordMinari` (a wrapper: step the env as usual, `close()` writes the dataset) and
`make_env` (gymnasium.make with a clear error for unknown ids). Frames are stored losslessly
(raw uint8 arrays, gzip-compressed, never JPEG) at the model's resolution.

Crash safety: everything is written into a hidden staging directory beside the final location
(`<root>/<namespace>/.<name>.staging-<pid>-<token>`, hidden so Minari ignores it) and moved into
place with one `os.rename` at the end. A process killed mid-recording leaves no dataset under the
final id; the next recorder of the same id removes staging directories whose process is gone. Overwriting builds
the new dataset aside first, then swaps it in.

The files are written with h5py in Minari's HDF5 layout (`<root>/<dataset_id>/data/` holding
`metadata.json` and `main_data.hdf5` with one `episode_<i>` group per episode), readable with
`worldmodel.data.load_episodes(dataset_id, root)`, or `minari.load_dataset(dataset_id)` with
`MINARI_DATASETS_PATH=<root>`. Minari's own writers are not used: `DataCollector` needs jax, and
minari 0.5.4's HDF5 storage imports Pillow and JPEG-encodes image spaces by default.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any, SupportsFloat

import cv2
import gymnasium as gym
import h5py
import minari
import numpy as np
from gymnasium import spaces
from minari.dataset.minari_dataset import DATASET_ID_RE
from minari.serialization import serialize_space

STAGING_TAG = ".staging-"    # hidden dirs `.<name>.staging-<pid>-<token>`: a dataset being written
OLD_TAG = ".old-"            # hidden dirs `.<name>.old-<pid>-<token>`: a replaced dataset being removed
NAMESPACE_METADATA = "namespace_metadata.json"   # what minari.create_namespace writes in a namespace dir
METADATA_FILE = "metadata.json"                  # Minari's names inside <dataset>/data/
HDF5_FILE = "main_data.hdf5"
FRAME_CHUNK = 64                                 # frames per HDF5 chunk of `observations`


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """`gymnasium.make(env_id, **kwargs)` after registering dreamgym's ids (and ALE's, if installed).

    Raises ValueError naming the id when it is unknown or malformed.
    """
    import envs  # noqa: F401  (registers dreamgym/*; already imported when this module is)

    if env_id.startswith("ALE/"):
        try:
            import ale_py
        except ImportError as error:
            raise ValueError(f"environment id {env_id!r} needs ale-py: pip install 'dreamgym[atari]'") from error
        gym.register_envs(ale_py)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        raise ValueError(
            f"unknown environment id {env_id!r} ({error}). dreamgym ids such as 'dreamgym/CoinChase-v0' are "
            "registered by `import envs`; Atari ids ('ALE/Pong-v5') need ale-py: pip install 'dreamgym[atari]'"
        ) from error


def check_recordable(env: gym.Env) -> None:
    """Raise ValueError unless `env` has a Discrete action space and uint8 (H, W, 3) image observations."""
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    if not isinstance(env.action_space, spaces.Discrete):
        raise ValueError(f"{name}: the action space must be Discrete (a world model is driven by keys), "
                         f"got {env.action_space}")
    obs = env.observation_space
    if not (isinstance(obs, spaces.Box) and obs.dtype == np.uint8 and len(obs.shape) == 3 and obs.shape[2] == 3):
        raise ValueError(f"{name}: observations must be RGB frames, Box(0, 255, (H, W, 3), uint8), got {obs}")


def check_dataset_id(dataset_id: str) -> None:
    """Raise ValueError unless `dataset_id` is a Minari id with a version: (namespace/)name-v<version>."""
    match = DATASET_ID_RE.fullmatch(dataset_id)
    if match is None or match.group("version") is None:
        raise ValueError(f"dataset_id {dataset_id!r} must look like (namespace/)name-v<version>, "
                         "e.g. 'coinchase/random-v0'")


def dataset_path(dataset_id: str, root: str | Path) -> Path:
    """Where the dataset `dataset_id` lives under the datasets root (Minari's layout)."""
    return Path(root) / dataset_id


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> a new (size, size, 3) uint8 array.

    The whole frame is stretched to the square (the aspect ratio is not kept: no crop, no borders, so nothing the
    game shows is lost): area averaging (cv2.INTER_AREA) where it shrinks, nearest neighbour where it grows, so a
    small pixel-art grid (MinAtar's 10 x 10) stays crisp blocks."""
    if frame.shape[:2] == (size, size):
        return frame.copy()   # the env may reuse its frame buffer
    grows = frame.shape[0] < size and frame.shape[1] < size
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST if grows else cv2.INTER_AREA)


class RecordMinari(gym.Wrapper):
    """Record every step of an env into a Minari dataset; `close()` (or `finalize()`) writes it.

    Step the wrapped env as usual. Each episode (from `reset` to termination/truncation, or to the
    next `reset`/`close`, then marked truncated) is stored with observations (n+1 frames, resized to
    `resize_to` x `resize_to`), actions (n,), rewards (n,), terminations (n,), truncations (n,) and
    infos: every numeric, fixed-shape info entry present at every step, as arrays of length n+1.
    The wrapper's observation space is the resized Box; `step`/`reset` return resized frames.

    Args:
        env: Discrete actions, uint8 (H, W, 3) observations (else ValueError).
        dataset_id: Minari id, `(namespace/)name-v<version>`, e.g. "coinchase/random-v0".
        root: the datasets root; the dataset goes to `<root>/<dataset_id>`.
        overwrite: replace an existing dataset (built aside, then swapped in); else FileExistsError.
        resize_to: side of the stored square frames.
        algorithm_name: recorded in the dataset metadata (e.g. the policy name).
        metadata: extra JSON-able dataset metadata (e.g. the recording config).
        record_infos: store info entries (see above).
    """

    def __init__(self, env: gym.Env, dataset_id: str, root: str | Path, overwrite: bool = False, resize_to: int = 64,
                 algorithm_name: str | None = None, metadata: dict[str, Any] | None = None, record_infos: bool = True):
        check_recordable(env)
        if resize_to < 1:
            raise ValueError(f"resize_to must be >= 1, got {resize_to}")
        check_dataset_id(dataset_id)
        super().__init__(env)
        self.dataset_id = dataset_id
        self.root = Path(root)
        self.path = dataset_path(dataset_id, root)
        self.overwrite = overwrite
        self.resize_to = resize_to
        self.record_infos = record_infos
        if self.path.exists() and not overwrite:
            raise FileExistsError(self._exists_message())
        self.observation_space = spaces.Box(0, 255, (resize_to, resize_to, 3), np.uint8)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(self.path)
        self.staging = self.path.parent / f".{self.path.name}{STAGING_TAG}{os.getpid()}-{secrets.token_hex(4)}"
        self._metadata = self._dataset_metadata(algorithm_name, metadata)
        (self.staging / "data").mkdir(parents=True)
        self._file = self.staging / "data" / HDF5_FILE
        self._episode_id = 0
        self._steps = 0
        self._episode: dict[str, list] | None = None   # the open episode's per-step lists
        self._done = False                              # finalized, aborted or closed

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._check_open()
        self._flush_episode()
        obs, info = self.env.reset(seed=seed, options=options)
        frame = resize_frame(np.asarray(obs), self.resize_to)
        self._episode = {"seed": seed, "frames": [frame], "actions": [], "rewards": [], "terminations": [],
                         "truncations": [], "infos": [_snapshot(info)]}
        return frame, info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        self._check_open()
        if self._episode is None:
            raise gym.error.ResetNeeded("call reset() before step(), and again after the episode ended")
        obs, reward, terminated, truncated, info = self.env.step(action)
        frame = resize_frame(np.asarray(obs), self.resize_to)
        episode = self._episode
        episode["frames"].append(frame)
        episode["actions"].append(int(action))
        episode["rewards"].append(float(reward))
        episode["terminations"].append(bool(terminated))
        episode["truncations"].append(bool(truncated))
        episode["infos"].append(_snapshot(info))
        self._steps += 1
        if terminated or truncated:
            self._flush_episode()
        return frame, reward, terminated, truncated, info

    def close(self) -> None:
        """Write the dataset (if not done yet) and close the env."""
        try:
            if not self._done:
                self.finalize()
        finally:
            super().close()

    # ------------------------------------------------------------------ dataset
    @property
    def total_episodes(self) -> int:
        """Episodes stored so far (the open one not included)."""
        return self._episode_id

    @property
    def total_steps(self) -> int:
        """Steps recorded so far, the open episode included."""
        return self._steps

    def finalize(self) -> Path | None:
        """Store the open episode (as truncated) and move the dataset into place atomically.

        Returns the dataset path, or None (with a warning, nothing written) when no step was recorded.
        """
        self._check_open()
        self._flush_episode()
        self._done = True
        if self._episode_id == 0:
            shutil.rmtree(self.staging, ignore_errors=True)
            warnings.warn(f"no step was recorded; dataset {self.dataset_id!r} not written", stacklevel=2)
            return None
        try:
            meta = {**self._metadata, "total_episodes": self._episode_id, "total_steps": self._steps}
            meta["dataset_size"] = round(self._file.stat().st_size / 1e6, 1)   # MB, as minari reports it
            (self.staging / "data" / METADATA_FILE).write_text(json.dumps(meta))
            _fsync_tree(self.staging)
            self._move_into_place()
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        _write_namespace_metadata(self.root, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything recorded; no dataset is written. The env stays open."""
        if not self._done:
            self._done = True
            self._episode = None
            shutil.rmtree(self.staging, ignore_errors=True)

    def _move_into_place(self) -> None:
        if not self.path.exists():
            os.rename(self.staging, self.path)
            return
        if not self.overwrite:
            raise FileExistsError(self._exists_message())
        old = self.path.parent / f".{self.path.name}{OLD_TAG}{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(self.path, old)          # a crash between these two renames is repaired by the next
        os.rename(self.staging, self.path)  # recorder: clean_stale_staging puts `old` back
        shutil.rmtree(old, ignore_errors=True)

    def _flush_episode(self) -> None:
        """Write the open episode (if it has steps) as group `episode_<id>` of the staging HDF5 file."""
        episode, self._episode = self._episode, None
        if episode is None or not episode["actions"]:
            return
        if not episode["terminations"][-1]:
            episode["truncations"][-1] = True
        frames = np.stack(episode["frames"])                                  # (n+1, R, R, 3) uint8
        rewards = np.asarray(episode["rewards"], dtype=np.float64)            # (n,)
        with h5py.File(self._file, "a", track_order=True) as file:
            group = file.create_group(f"episode_{self._episode_id}")
            group.attrs["id"] = self._episode_id
            if episode["seed"] is not None:
                group.attrs["seed"] = episode["seed"]
            group.attrs["total_steps"] = len(rewards)
            # what minari's EpisodeMetadataCallback stores per episode
            group.attrs.update({"rewards_sum": float(rewards.sum()), "rewards_mean": float(rewards.mean()),
                                "rewards_std": float(rewards.std()), "rewards_max": float(rewards.max()),
                                "rewards_min": float(rewards.min())})
            group.create_dataset("observations", data=frames, maxshape=(None, *frames.shape[1:]),
                                 chunks=(min(len(frames), FRAME_CHUNK), *frames.shape[1:]), compression="gzip",
                                 compression_opts=1)
            for key, values in (("actions", np.asarray(episode["actions"], dtype=np.int64)), ("rewards", rewards),
                                ("terminations", np.asarray(episode["terminations"], dtype=np.bool_)),
                                ("truncations", np.asarray(episode["truncations"], dtype=np.bool_))):
                group.create_dataset(key, data=values, maxshape=(None,), chunks=True)
            infos = group.create_group("infos")
            if self.record_infos:
                for key, values in stack_infos(episode["infos"]).items():
                    infos.create_dataset(key, data=values, maxshape=(None, *values.shape[1:]), chunks=True)
        self._episode_id += 1

    def _dataset_metadata(self, algorithm_name: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
        """Minari's dataset-level metadata.json keys (totals and size are added by finalize)."""
        meta: dict[str, Any] = {"dataset_id": self.dataset_id, "minari_version": minari.__version__,
                                "data_format": "hdf5", "jpeg_encoding": False,
                                "observation_space": serialize_space(self.observation_space),
                                "action_space": serialize_space(self.env.action_space)}
        if self.env.spec is not None:
            try:
                meta["env_spec"] = self.env.spec.to_json()
            except (TypeError, ValueError) as error:
                warnings.warn(f"env spec not recorded, it is not JSON-able: {error}", stacklevel=3)
        if algorithm_name is not None:
            meta["algorithm_name"] = algorithm_name
        if extra:
            meta["dreamgym"] = json.loads(json.dumps(extra))   # fail now, not at the end, if not JSON-able
        return meta

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError(f"the recorder of {self.dataset_id!r} is already finalized, aborted or closed")

    def _exists_message(self) -> str:
        return (f"dataset {self.dataset_id!r} already exists under root {str(self.root)!r} ({self.path}); "
                "choose another dataset_id or pass overwrite=True")


def _snapshot(info: dict[str, Any]) -> dict[str, Any]:
    """A copy of an info dict that later in-place changes by the env cannot alter."""
    return {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in info.items()}


def stack_infos(infos: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-step info dicts -> {key: (len(infos), ...) array} for numeric entries of one fixed shape."""
    stacked = {}
    for key in infos[0]:
        try:
            values = [np.asarray(info[key]) for info in infos]
        except KeyError:
            continue
        first = values[0]
        if first.dtype.kind not in "biuf" or any(v.shape != first.shape or v.dtype != first.dtype for v in values):
            continue
        stacked[key] = np.stack(values)
    return stacked


def clean_stale_staging(path: Path) -> None:
    """Remove staging dirs of `path` left by dead processes; restore a dataset lost mid-overwrite."""
    parent = path.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        for tag in (STAGING_TAG, OLD_TAG):
            prefix = f".{path.name}{tag}"
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and _process_alive(int(pid)):
                continue
            if tag == OLD_TAG and not path.exists():
                os.rename(entry, path)   # killed between the two renames of an overwrite
            else:
                shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(directory: Path) -> None:
    for file in directory.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def _write_namespace_metadata(root: Path, path: Path) -> None:
    """Mark each namespace dir between root and the dataset the way minari.create_namespace does."""
    for directory in path.relative_to(root).parents:
        target = root / directory / NAMESPACE_METADATA
        if str(directory) != "." and not target.exists():
            target.write_text("{}")
