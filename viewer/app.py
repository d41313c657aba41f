"""The viewer's frame loop: `Viewer` wires the pieces of this package together.

Each `tick` reads the pending key events (viewer.keymap), shows one new frame unless paused — a
reset or a step of the game (viewer.game) — writes it to the video (envs.video), draws it with the
HUD (viewer.screen, viewer.hud) and holds the frame rate; an episode that ends is reset on the next
tick. Control keys become `Command`s handled here; F5 goes to the recorder (viewer.recording).

The action keys and the HUD's action names come from the game (viewer.realgame.action_keys over the
played env and, for a dream, the checkpoint's real game, opened for that unless playing headless).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from envs.policies import make_policy
from envs.video import VideoWriter
from viewer.config import PlayConfig
from viewer.game import Game, make_env, real_game
from viewer.hud import HudState, Notice, hud_lines
from viewer.keymap import Command, HeldKeys, KeyMap, build_keymap, describe
from viewer.meters import Meters
from viewer.realgame import RealGame, action_keys
from viewer.recording import DEFAULT_DATASETS, Recorder
from viewer.screen import Screen

LABELS = ("dream", "real")   # over the two frames side by side


class Viewer:
    """The play loop: `tick` handles events and advances and draws one frame, `run` loops, `close` finishes."""

    def __init__(self, config: PlayConfig):
        self.config = config
        self.game: Game | None = None
        self.recorder: Recorder | None = None
        self.video: VideoWriter | None = None
        self.screen: Screen | None = None
        self.meters = Meters()
        self.notice = Notice()
        self.frames_shown = 0
        self.running, self.paused, self.single_step, self.reset_requested = True, False, False, True
        env = make_env(config)
        real: RealGame | None = None
        try:
            real = real_game(config, env)
            self.keymap = self.make_keymap(env, real)
            self.keys = HeldKeys(self.keymap)
            player = self.keys if config.policy == "human" else make_policy(
                config.policy, int(env.action_space.n), np.random.default_rng(config.seed))
            self.game = Game(env, player, config.seed, dream=None if config.real else env, real=real,
                             noop=self.keymap.noop)
            self.recorder = Recorder(env, config.record or DEFAULT_DATASETS[config.mode], config.record_root,
                                     config.fps, config.scale, config.overwrite, config.policy)
            if config.video:
                self.video = VideoWriter(config.video, config.fps, config.scale, config.overwrite)
            if config.record:
                self._say(self.recorder.start(config.record, self._recording_metadata()))
                self._recording_changed()
            if config.side_by_side:
                self._toggle_side_by_side()
            if self.keymap.dropped:
                self._say("keys of the viewer's controls, not the game's: " + ", ".join(
                    f"{describe(keys)} -> {self.keymap.name(action)}" for keys, action in self.keymap.dropped.items()))
            if not config.headless:
                game_id = real.env_id if real is not None else getattr(env.spec, "id", "")
                self.screen = Screen(f"dreamgym: {'real' if config.real else 'dream of'} {game_id or 'a game'}",
                                     config.scale)
                self._layout()
        except BaseException:
            if self.game is None:
                env.close()
                if real is not None:
                    real.close()
            self.close()
            raise

    def make_keymap(self, env, real: RealGame | None) -> KeyMap:
        """The played game's key map (viewer.keymap): from the played env and the checkpoint's real game, which is
        opened for it unless the viewer plays headless without the real game beside."""
        wanted = real is not None and (not self.config.headless or self.config.side_by_side)
        return build_keymap(int(env.action_space.n), *action_keys([env, real.open() if wanted else None]))

    # ------------------------------------------------------------------ commands
    def command(self, command: Command) -> None:
        if command is Command.QUIT:
            self.running = False
        elif command is Command.RESET:
            self.reset_requested = True
        elif command is Command.PAUSE:
            self.paused = not self.paused
        elif command is Command.STEP:
            self.paused, self.single_step = True, True
        elif command in (Command.FEWER_DENOISE_STEPS, Command.MORE_DENOISE_STEPS):
            self._say(self.game.change_denoise_steps(-1 if command is Command.FEWER_DENOISE_STEPS else 1))
        elif command is Command.SIDE_BY_SIDE:
            self._toggle_side_by_side()
            self._layout()
        elif command is Command.RECORD:
            self._say(self.recorder.toggle(self._recording_metadata()))
            self._recording_changed()

    def _say(self, message: str | None) -> None:
        if message:
            self.notice.say(message)

    def _toggle_side_by_side(self) -> None:
        self._say(self.game.toggle_side_by_side())
        if self.game.twin is not None:
            self.reset_requested = True   # both games start from one real start

    def _recording_metadata(self) -> dict:
        return {"mode": self.config.mode, "checkpoint": str(self.config.checkpoint),
                "denoise_steps": self.game.denoise_steps, "seed": self.config.seed}

    def _recording_changed(self) -> None:
        """Step through the recording, if one is open; a new one starts with a reset (a dataset holds whole
        episodes)."""
        self.game.stepper = self.recorder.stepper
        if self.recorder.recording is not None:
            self.reset_requested = True

    def _layout(self) -> None:
        if self.screen is not None:
            self.screen.layout(self.game.env.observation_space.shape, 2 if self.game.twin else 1)

    # ------------------------------------------------------------------ frames
    def tick(self) -> bool:
        """Handle pending events, show one new frame (reset or step) unless paused, draw, hold the frame rate.

        Returns False once the viewer should quit."""
        started = time.perf_counter()
        if self.screen is not None:
            for event in self.screen.events():
                command = self.keys.on_event(event)
                if command is not None:
                    self.command(command)
        if not self.running:
            return False
        advance = not self.paused or self.single_step
        self.single_step = False
        new_frame = self.reset_requested or advance
        if self.reset_requested or (advance and self.game.episode_over):
            self.game.reset()
            self.reset_requested = False
        elif advance:
            step_started = time.perf_counter()
            self.game.step()
            self.meters.stepped((time.perf_counter() - step_started) * 1e3)
        if new_frame:
            self.frames_shown += 1
            if self.video is not None:
                self.video.write(self.game.view())
        if self.screen is not None:
            labels = LABELS if self.game.twin is not None else ()
            self.screen.draw(self.game.view(), labels, self.game.obs.shape[1], hud_lines(self.hud_state()))
        self.meters.ticked(started, time.perf_counter())
        if self.screen is not None:
            self.screen.wait(self.config.fps)
        return self.running

    def run(self, max_frames: int | None = None) -> int:
        """Tick until quit or until `max_frames` new frames were shown; returns the frames shown."""
        while self.running and (max_frames is None or self.frames_shown < max_frames):
            self.tick()
        return self.frames_shown

    def hud_state(self) -> HudState:
        game = self.game
        return HudState(
            mode="REAL" if self.config.real else ("DREAM | REAL" if game.twin is not None else "DREAM"),
            paused=self.paused, frame_index=game.frame_index, episode_return=game.episode_return,
            fps=self.meters.fps, target_fps=self.config.fps, frame_ms=self.meters.frame_ms, step_ms=self.meters.step_ms,
            denoise_steps=game.denoise_steps, max_denoise_steps=game.max_denoise_steps, divergence=game.divergence,
            recording=self.recorder.dataset_id, recorded_steps=self.recorder.steps, message=self.notice.current(),
            action=None if game.action is None else self.keymap.name(game.action), keys=self.keymap.help)

    def close(self) -> None:
        """Finish a recording and the video, close the envs and the window."""
        if self.recorder is not None and self.recorder.recording is not None:
            self.recorder.stop()
        if self.video is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # no frame shown: no video, nothing to warn about
                self.video.close()
            self.video = None
        if self.game is not None:
            self.game.close()
            self.game = None
        if self.screen is not None:
            self.screen.close()
            self.screen = None
