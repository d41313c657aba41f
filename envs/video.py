"""MP4 videos of frames: `VideoWriter` (any RGB frames, e.g. play.py's side-by-side view), `RecordMp4`
(a Gymnasium wrapper that writes an env's observations) and `side_by_side` (frames in a row).

Videos are written with OpenCV (`mp4v` codec) under a hidden temporary name beside the target,
`.<name>.partial-<pid>-<token>.mp4`, and moved into place when closed, so an interrupted run never
leaves a truncated file under the final name. An existing target is refused unless overwrite=True.
Frames are RGB uint8 (H, W, 3); an integer `scale` enlarges them with nearest-neighbour pixels.
"""
from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any, SupportsFloat

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces

FOURCC = "mp4v"
SUFFIX = ".mp4"
PARTIAL_TAG = ".partial-"
GAP_COLOUR = (60, 60, 60)   # RGB of the strip between frames placed side by side


def side_by_side(frames: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """RGB frames (H, W_i, 3) uint8 of one height -> one (H, sum W_i + gap * (n-1), 3) frame."""
    heights = {frame.shape[0] for frame in frames}
    if len(heights) != 1:
        raise ValueError(f"side_by_side needs frames of one height, got shapes {[f.shape for f in frames]}")
    parts: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        if i:
            parts.append(np.full((frame.shape[0], gap, 3), GAP_COLOUR, np.uint8))
        parts.append(frame)
    return np.concatenate(parts, axis=1)


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, C) -> (H*scale, W*scale, C), each pixel repeated (crisp pixel art)."""
    return frame if scale == 1 else np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


class VideoWriter:
    """Write RGB frames to an mp4 file; `close()` moves it into place.

    The video's size is set by the first frame (after `scale`, rounded up to even sides as the codec
    needs). A later frame of another size is placed top-left on a black canvas of that size (cropped
    if larger) — play.py's view changes width when side-by-side is toggled mid-video.

    Args:
        path: the target file; must end in .mp4. Its folder is created.
        fps: frames per second of the video.
        scale: integer upscaling of every frame.
        overwrite: replace an existing file at `path`; else FileExistsError (now and on close).
    """

    def __init__(self, path: str | Path, fps: float, scale: int = 1, overwrite: bool = False):
        self.path = Path(path)
        if self.path.suffix.lower() != SUFFIX:
            raise ValueError(f"video path {str(self.path)!r} must end in {SUFFIX} (codec {FOURCC})")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"video {str(self.path)!r} already exists; "
                                  "choose another path or pass overwrite=True")
        self.fps, self.scale, self.overwrite = float(fps), int(scale), overwrite
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(
            f".{self.path.stem}{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")
        self.frames_written = 0
        self.size: tuple[int, int] | None = None   # (height, width), set by the first frame
        self._writer: cv2.VideoWriter | None = None
        self._done = False

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame (H, W, 3) uint8."""
        if self._done:
            raise RuntimeError(f"video {str(self.path)!r} is already closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"a video frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        frame = upscale(frame, self.scale)
        if self._writer is None:
            self.size = (frame.shape[0] + frame.shape[0] % 2, frame.shape[1] + frame.shape[1] % 2)
            self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*FOURCC), self.fps,
                                           (self.size[1], self.size[0]))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV could not open {str(self.partial)!r} for writing with codec {FOURCC}")
        if frame.shape[:2] != self.size:
            canvas = np.zeros((*self.size, 3), np.uint8)
            height, width = min(frame.shape[0], self.size[0]), min(frame.shape[1], self.size[1])
            canvas[:height, :width] = frame[:height, :width]
            frame = canvas
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> Path | None:
        """Finish the file and move it to `path`. Returns the path, or None (with a warning) if no frame came."""
        if self._done:
            return self.path if self.frames_written and self.path.exists() else None
        self._done = True
        if self._writer is None:
            warnings.warn(f"no frame was written; video {str(self.path)!r} not created", stacklevel=2)
            return None
        self._writer.release()
        try:
            if self.overwrite:
                os.replace(self.partial, self.path)
            else:
                os.link(self.partial, self.path)   # fails if the path appeared meanwhile: never clobber
                os.unlink(self.partial)
        except FileExistsError:
            self.partial.unlink(missing_ok=True)
            raise FileExistsError(f"video {str(self.path)!r} appeared while recording; "
                                  "pass overwrite=True to replace it") from None
        return self.path

    def abort(self) -> None:
        """Drop the video; nothing is written under `path`."""
        if not self._done:
            self._done = True
            if self._writer is not None:
                self._writer.release()
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class RecordMp4(gym.Wrapper):
    """Write every observation of an env (reset frames included) to one mp4; `close()` finishes it.

    All episodes go into the one file, back to back. `finalize()` finishes the video without closing
    the env. Observations must be RGB frames, Box(0, 255, (H, W, 3), uint8).

    Args:
        env: the env to film.
        path: the .mp4 file (see `VideoWriter`).
        fps: frames per second; None = the env's metadata["render_fps"], else 15.
        scale: integer upscaling of the frames.
        overwrite: replace an existing file; else FileExistsError.
    """

    def __init__(self, env: gym.Env, path: str | Path, fps: float | None = None, scale: int = 1,
                 overwrite: bool = False):
        obs = env.observation_space
        if not (isinstance(obs, spaces.Box) and obs.dtype == np.uint8 and len(obs.shape) == 3 and obs.shape[2] == 3):
            raise ValueError(f"RecordMp4 needs RGB frame observations, Box(0, 255, (H, W, 3), uint8), got {obs}")
        super().__init__(env)
        fps = fps if fps is not None else env.metadata.get("render_fps") or 15
        self.video = VideoWriter(path, fps, scale, overwrite)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.video.write(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.video.write(obs)
        return obs, reward, terminated, truncated, info

    @property
    def frames_written(self) -> int:
        return self.video.frames_written

    def finalize(self) -> Path | None:
        """Finish the video (the env stays open); returns its path, or None if no frame was written."""
        return self.video.close()

    def abort(self) -> None:
        """Drop the video; the env stays open."""
        self.video.abort()

    def close(self) -> None:
        try:
            self.video.close()
        finally:
            super().close()
