"""Play a dreamed game — or the real CoinChase — in a pygame window, or headless into an mp4.

    python play.py                                  # the bundled CoinChase world model
    python play.py --checkpoint runs/x/ckpt --denoise-steps 2 max_episode_steps=500
    python play.py --real                           # the real game
    python play.py --headless --frames 300 --policy seeker --real --video out.mp4

Keys (envs/keymap.py): arrows/WASD move, R reset, P pause, . single step, [ ] denoise steps,
Tab side-by-side with the real game (same keys, same start, live divergence), F5 start/finish
recording (a Minari dataset plus an mp4 of it), Esc quit. Trailing `key=value` overrides go to the
env's constructor (WorldModelEnv, or CoinChaseEnv with --real).

The viewer only reads keys, calls env.reset/env.step and draws. The pieces live in envs/: keymap.py
(keys), hud.py (HUD), compare.py (divergence, priming the dream from the real game), video.py (mp4),
play_recording.py (F5: Minari dataset + mp4), overrides.py (key=value). Every tick shows one new
frame (a reset or a step) unless paused; an episode that ends is reset on the next tick.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers dreamgym/*)
from envs.coinchase import ACTION_NAMES, FRAME_SIZE, CoinChaseEnv
from envs.compare import Divergence, divergence, real_context
from envs.hud import BACKGROUND, HudPainter, HudState, hud_lines
from envs.keymap import Command, HeldKeys, command_for_key
from envs.policies import POLICY_NAMES, Policy, make_policy
from envs.overrides import check_kwargs, parse_overrides
from envs.play_recording import PlayRecording, next_version
from envs.video import VideoWriter, side_by_side, upscale

DEFAULT_DATASETS = {"dream": "play/dream-v0", "real": "play/real-v0"}   # F5 without --record
GAP = 2                 # game pixels between the dream and the real frame
SMOOTHING = 0.1         # weight of the newest frame in the HUD's moving averages
MESSAGE_SECONDS = 3.0   # how long a HUD notice stays
MIN_WINDOW_WIDTH = 640  # pixels, so the HUD's lines fit at small --scale
FLAG_OWNED = {"checkpoint": "--checkpoint", "denoise_steps": "--denoise-steps", "device": "--device",
              "render_mode": "(the viewer draws)"}   # env kwargs set by flags, not by key=value


@dataclass
class PlayConfig:
    """Everything play.py can be told; the command line fills it (`parse_args`)."""
    real: bool = False                    # play the real CoinChase instead of the dream
    checkpoint: str | None = None         # world-model checkpoint dir; None = envs/checkpoints/coinchase
    denoise_steps: int | None = None      # None = the checkpoint's default
    fps: float = 15.0                     # target frame rate
    scale: int = 8                        # screen (and video) pixels per game pixel
    device: str = "cpu"
    seed: int | None = None               # episode k resets with seed + k; None = random seeds
    headless: bool = False                # no window and no waiting: play `frames` frames with `policy`
    frames: int | None = None             # stop after this many frames; None = until quit
    policy: str = "human"                 # "human" (keys), "random" or "seeker" (real game only)
    side_by_side: bool = False            # start with the real game beside the dream (Tab)
    video: str | None = None              # mp4 of every frame shown (side by side when it is on)
    record: str | None = None             # Minari dataset id recorded from the start (F5 records too)
    record_root: str = "data/minari"      # datasets root; a recording's mp4 goes beside its dataset
    overwrite: bool = False               # replace an existing video or dataset
    threads: int = 0                      # torch CPU threads for the dream; 0 = torch's default
    env_kwargs: dict[str, Any] = field(default_factory=dict)   # key=value overrides for the env


class Viewer:
    """The play loop: `handle_event` reads keys, `tick` advances and draws one frame, `run` loops."""

    def __init__(self, config: PlayConfig):
        if config.headless and (config.policy == "human" or config.frames is None):
            raise ValueError("--headless plays without keys: give --policy random|seeker and --frames N")
        if config.policy not in ("human", *POLICY_NAMES):
            raise ValueError(f"unknown policy {config.policy!r}; choose human, {', '.join(POLICY_NAMES)}")
        if config.policy == "seeker" and not config.real:
            raise ValueError("the seeker policy reads the real game's state: use --real, or --policy random")
        if config.side_by_side and config.real:
            raise ValueError("--side-by-side compares the dream with the real game: leave out --real")
        if config.fps <= 0 or config.scale < 1 or (config.frames is not None and config.frames < 1):
            raise ValueError(f"need --fps > 0, --scale >= 1 and --frames >= 1, got {config.fps}, {config.scale}, {config.frames}")
        self.config = config
        self.env = self._make_env()
        self.stepper: gym.Env = self.env   # the env, or the recorders wrapped around it
        self.real_env: CoinChaseEnv | None = None
        self.recording: PlayRecording | None = None
        self.dataset_ids: set[str] = set()           # ids recorded in this session
        self.policy: Policy | None = None
        if config.policy != "human":
            self.policy = make_policy(config.policy, int(self.env.action_space.n), np.random.default_rng(config.seed))
        self.keys = HeldKeys()
        self.seeds = np.random.default_rng(config.seed)
        self.episodes = 0
        self.obs: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.real_obs: np.ndarray | None = None
        self.real_info: dict[str, Any] = {}
        self.divergence: Divergence | None = None
        self.frame_index, self.episode_return, self.frames_shown = 0, 0.0, 0
        self.running, self.paused, self.single_step = True, False, False
        self.reset_requested, self.episode_over, self.compare = True, False, False
        self.fps, self.frame_ms, self.step_ms = 0.0, 0.0, 0.0
        self.last_tick: float | None = None
        self.message, self.message_until = None, 0.0
        self.video: VideoWriter | None = None
        self.window = self.clock = self.hud = None
        try:
            if config.video:
                self.video = VideoWriter(config.video, config.fps, config.scale, config.overwrite)
            if config.record:
                self._start_recording(config.record)
            if config.side_by_side:
                self._toggle_compare()
            if not config.headless:
                import pygame

                pygame.display.init()   # not pygame.init(): no audio wanted
                pygame.font.init()
                pygame.display.set_caption("dreamgym: " + ("real CoinChase" if config.real else "dream"))
                self.clock, self.hud = pygame.time.Clock(), HudPainter()
                self._layout()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _make_env(self) -> gym.Env:
        """The played env; key=value overrides are checked against its constructor first."""
        if self.config.real:
            check_kwargs(CoinChaseEnv, self.config.env_kwargs, FLAG_OWNED)
            return gym.make("dreamgym/CoinChase-v0", **self.config.env_kwargs)
        from envs.dream import DEFAULT_CHECKPOINT   # imports torch: only when dreaming
        from envs.world_model_env import WorldModelEnv

        check_kwargs(WorldModelEnv, self.config.env_kwargs, FLAG_OWNED)
        path = Path(self.config.checkpoint) if self.config.checkpoint else DEFAULT_CHECKPOINT
        if not path.is_dir():
            where = "the bundled checkpoint" if self.config.checkpoint is None else "checkpoint"
            raise ValueError(f"{where} {path} does not exist: pass --checkpoint PATH to a trained (or "
                             "worldmodel.untrained) checkpoint, or --real to play the real game")
        return WorldModelEnv(checkpoint=path, denoise_steps=self.config.denoise_steps, device=self.config.device,
                             **self.config.env_kwargs)

    @property
    def max_denoise_steps(self) -> int | None:
        return None if self.config.real else self.env.core.sampler.max_steps

    def _layout(self) -> None:
        """Open (or resize) the window for one frame, or two side by side, plus the HUD panel."""
        if self.hud is None:   # headless
            return
        import pygame

        height, width = self.env.observation_space.shape[:2]
        width = 2 * width + GAP if self.compare else width
        size = (max(width * self.config.scale, MIN_WINDOW_WIDTH), height * self.config.scale + self.hud.height)
        if self.window is None or self.window.get_size() != size:
            self.window = pygame.display.set_mode(size)

    # ------------------------------------------------------------------ keys
    def handle_event(self, event) -> None:
        """React to one pygame event: quit, keys held, control keys."""
        import pygame

        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.keys.clear()
        elif event.type == pygame.KEYUP:
            self.keys.key_up(event.key)
        elif event.type == pygame.KEYDOWN:
            self.keys.key_down(event.key)
            command = command_for_key(event.key)
            if command is not None:
                self._command(command)

    def _command(self, command: Command) -> None:
        if command is Command.QUIT:
            self.running = False
        elif command is Command.RESET:
            self.reset_requested = True
        elif command is Command.PAUSE:
            self.paused = not self.paused
        elif command is Command.STEP:
            self.paused, self.single_step = True, True
        elif command in (Command.FEWER_DENOISE_STEPS, Command.MORE_DENOISE_STEPS):
            self._change_denoise_steps(-1 if command is Command.FEWER_DENOISE_STEPS else 1)
        elif command is Command.SIDE_BY_SIDE:
            self._toggle_compare()
            self._layout()
        elif command is Command.RECORD:
            self._toggle_recording()

    def _say(self, message: str) -> None:
        self.message, self.message_until = message, time.perf_counter() + MESSAGE_SECONDS

    def _change_denoise_steps(self, delta: int) -> None:
        if self.max_denoise_steps is None:
            self._say("the real game has no denoise steps")
            return
        self.env.denoise_steps = min(max(self.env.denoise_steps + delta, 1), self.max_denoise_steps)

    def _toggle_compare(self) -> None:
        if self.config.real:
            self._say("side by side compares the dream with the real game: play without --real")
            return
        if self.env.observation_space.shape != (FRAME_SIZE, FRAME_SIZE, 3) or self.env.action_space.n != len(ACTION_NAMES):
            self._say("side by side needs a CoinChase checkpoint (64x64 frames, 5 actions)")
            return
        self.compare = not self.compare
        if self.compare:
            self.real_env = self.real_env or CoinChaseEnv()
            self.reset_requested = True
        else:
            self.real_obs, self.divergence = None, None

    # ------------------------------------------------------------------ recording
    def _toggle_recording(self) -> None:
        if self.recording is not None:
            self._stop_recording()
            return
        base = self.config.record or DEFAULT_DATASETS["real" if self.config.real else "dream"]
        try:
            self._start_recording(next_version(base, self.config.record_root, self.dataset_ids))
        except (FileExistsError, ValueError) as error:
            self._say(f"cannot record: {error}")

    def _start_recording(self, dataset_id: str) -> None:
        """Record the env from the next tick, which resets it (a dataset holds whole episodes)."""
        meta = {"mode": "real" if self.config.real else "dream", "checkpoint": str(self.config.checkpoint),
                "denoise_steps": None if self.config.real else self.env.denoise_steps, "seed": self.config.seed}
        self.recording = PlayRecording(self.env, dataset_id, self.config.record_root, self.config.fps,
                                       self.config.scale, self.config.overwrite, self.config.policy, meta)
        self.stepper, self.reset_requested = self.recording.env, True
        self.dataset_ids.add(dataset_id)
        self._say(f"recording {dataset_id}")

    def _stop_recording(self) -> None:
        recording, self.recording, self.stepper = self.recording, None, self.env
        self._say(recording.finish())

    # ------------------------------------------------------------------ frames
    def _action(self) -> int:
        if self.policy is None:
            return self.keys.next_action()
        return int(self.policy(self.obs, self.info))

    def _reset(self) -> None:
        seed = self.config.seed + self.episodes if self.config.seed is not None else int(self.seeds.integers(2**31))
        options = None
        if self.compare:
            context_length = len(self.env.core.start_context(0)[0])
            frames, actions, self.real_obs, self.real_info, seed = real_context(
                self.real_env, seed, context_length, int(self.env.action_space.n))
            options = {"frames": frames, "actions": actions}
        self.obs, self.info = self.stepper.reset(seed=seed, options=options)
        if self.policy is not None:
            self.policy.reset(np.random.default_rng(seed))
        self.divergence = divergence(self.obs, self.real_obs) if self.compare else None
        self.episodes += 1
        self.frame_index, self.episode_return = 0, 0.0
        self.reset_requested = self.episode_over = False

    def _step(self, action: int) -> None:
        started = time.perf_counter()
        self.obs, reward, terminated, truncated, self.info = self.stepper.step(action)
        self.episode_over = terminated or truncated
        if self.compare:
            self.real_obs, _, real_terminated, real_truncated, self.real_info = self.real_env.step(action)
            self.episode_over = self.episode_over or real_terminated or real_truncated
            self.divergence = divergence(self.obs, self.real_obs)
        self.step_ms = _smooth(self.step_ms, (time.perf_counter() - started) * 1e3, self.step_ms == 0.0)
        self.frame_index += 1
        self.episode_return += float(reward)

    def view(self) -> np.ndarray:
        """The game frames as shown (dream | real when side by side), at game resolution (H, W, 3) uint8."""
        return side_by_side([self.obs, self.real_obs], GAP) if self.compare else self.obs

    def tick(self) -> bool:
        """Handle pending events, show one new frame (reset or step) unless paused, draw, hold the frame rate.

        Returns False once the viewer should quit."""
        started = time.perf_counter()
        if self.window is not None:
            import pygame

            for event in pygame.event.get():
                self.handle_event(event)
        if not self.running:
            return False
        advance = not self.paused or self.single_step
        self.single_step = False
        new_frame = self.reset_requested or advance
        if self.reset_requested or (advance and self.episode_over):
            self._reset()
        elif advance:
            self._step(self._action())
        if new_frame:
            self.frames_shown += 1
            if self.video is not None:
                self.video.write(self.view())
        if self.window is not None:
            self._draw()
        now = time.perf_counter()
        self.frame_ms = _smooth(self.frame_ms, (now - started) * 1e3, self.last_tick is None)
        if self.last_tick is not None:
            self.fps = _smooth(self.fps, 1.0 / max(started - self.last_tick, 1e-9), self.fps == 0.0)
        self.last_tick = started
        if self.clock is not None:
            self.clock.tick(self.config.fps)
        return self.running

    def run(self, max_frames: int | None = None) -> int:
        """Tick until quit or until `max_frames` new frames were shown; returns the frames shown."""
        while self.running and (max_frames is None or self.frames_shown < max_frames):
            self.tick()
        return self.frames_shown

    def hud_state(self) -> HudState:
        now = time.perf_counter()
        return HudState(
            mode="REAL" if self.config.real else ("DREAM | REAL" if self.compare else "DREAM"),
            paused=self.paused, frame_index=self.frame_index, episode_return=self.episode_return,
            fps=self.fps, target_fps=self.config.fps, frame_ms=self.frame_ms, step_ms=self.step_ms,
            denoise_steps=None if self.config.real else self.env.denoise_steps,
            max_denoise_steps=self.max_denoise_steps, divergence=self.divergence,
            recording=self.recording.dataset_id if self.recording else None,
            recorded_steps=self.recording.steps if self.recording else 0,
            message=self.message if now < self.message_until else None)

    def _draw(self) -> None:
        import pygame

        scale, view, frame_width = self.config.scale, self.view(), self.obs.shape[1]
        surface = pygame.surfarray.make_surface(upscale(view, scale).swapaxes(0, 1))
        self.window.fill(BACKGROUND)
        left = (self.window.get_width() - surface.get_width()) // 2
        self.window.blit(surface, (left, 0))
        if self.compare:
            for i, label in enumerate(("dream", "real")):
                text = self.hud.font.render(label, True, (255, 255, 255))
                self.window.blit(text, (left + i * (frame_width + GAP) * scale + 4, 4))
        self.hud.draw(self.window, view.shape[0] * scale, hud_lines(self.hud_state()))
        pygame.display.flip()

    def close(self) -> None:
        """Finish a recording and the video, close the envs and the window."""
        if self.recording is not None:
            self._stop_recording()
        if self.video is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # no frame shown: no video, nothing to warn about
                self.video.close()
            self.video = None
        self.env.close()
        if self.real_env is not None:
            self.real_env.close()
        if self.window is not None:
            import pygame

            pygame.quit()
            self.window = None


def _smooth(average: float, value: float, first: bool) -> float:
    return value if first else (1 - SMOOTHING) * average + SMOOTHING * value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="play.py", description=__doc__.split("\n")[0],
                                epilog="trailing key=value overrides go to the env constructor, e.g. max_episode_steps=500")
    p.add_argument("--real", action="store_true", help="play the real CoinChase instead of the dream")
    p.add_argument("--checkpoint", help="world-model checkpoint dir (default: envs/checkpoints/coinchase)")
    p.add_argument("--denoise-steps", type=int, help="denoising steps per frame, 1..max (default: the checkpoint's)")
    p.add_argument("--fps", type=float, default=15.0, help="target frame rate (default 15)")
    p.add_argument("--scale", type=int, default=8, help="screen and video pixels per game pixel (default 8)")
    p.add_argument("--device", default="cpu", help="torch device of the world model (default cpu)")
    p.add_argument("--seed", type=int, help="episode k resets with seed + k (default: random)")
    p.add_argument("--headless", action="store_true", help="no window, no waiting: play --frames N with --policy")
    p.add_argument("--frames", type=int, help="stop after N frames")
    p.add_argument("--policy", choices=("human", *POLICY_NAMES), default="human", help="who plays (default human)")
    p.add_argument("--side-by-side", action="store_true", help="start with the real game beside the dream (Tab)")
    p.add_argument("--video", help="write every frame shown to this .mp4")
    p.add_argument("--record", metavar="DATASET_ID", help="record a Minari dataset from the start (F5 toggles)")
    p.add_argument("--record-root", default="data/minari", help="datasets root (default data/minari)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing video or dataset")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy 2-core machine)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="env constructor overrides")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[PlayConfig, argparse.ArgumentParser]:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        kwargs = parse_overrides(args.overrides)
    except ValueError as error:
        parser.error(str(error))
    options = {name: value for name, value in vars(args).items() if name != "overrides"}
    return PlayConfig(**options, env_kwargs=kwargs), parser


def main(argv: list[str] | None = None) -> int:
    config, parser = parse_args(argv)
    if config.threads > 0 and not config.real:
        import torch   # only the dream needs torch

        torch.set_num_threads(config.threads)
    try:
        viewer = Viewer(config)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    started = time.perf_counter()
    try:
        frames = viewer.run(config.frames)
    finally:
        viewer.close()
    if config.headless:
        seconds = time.perf_counter() - started
        print(f"played {frames} frames in {seconds:.1f} s ({frames / seconds:.1f} fps, {viewer.step_ms:.1f} ms per step), "
              f"last return {viewer.episode_return:g}" + (f"; video {config.video}" if config.video else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
