"""The viewer's heads-up display: what it says (`HudState` -> `hud_lines`, pure), how it is drawn
(`HudPainter`, pygame fonts, one text line per row, a bar for the divergence meter), and the short
notices it shows for a few seconds (`Notice`).

Knows no env: the viewer fills a `HudState` each frame.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from viewer.compare import Divergence
from viewer.keymap import KEY_HELP

Colour = tuple[int, int, int]
WHITE: Colour = (235, 235, 235)
GREY: Colour = (150, 150, 150)
RED: Colour = (240, 70, 70)
ORANGE: Colour = (255, 160, 40)
YELLOW: Colour = (250, 220, 90)
CYAN: Colour = (90, 210, 250)
BACKGROUND: Colour = (16, 16, 22)

HUD_ROWS = 6                # the panel always has room for this many lines, so the window never jumps
METER_FULL_MAE = 64.0       # divergence meter is full at this mean absolute pixel error (0..255)
METER_WIDTH = 120           # pixels
PADDING = 6                 # pixels around the text
NOTICE_SECONDS = 3.0        # how long a notice stays


@dataclass
class HudState:
    """Everything the HUD shows for one frame."""
    mode: str                          # "DREAM", "REAL" or "DREAM | REAL"
    paused: bool
    frame_index: int                   # steps since the last reset
    episode_return: float
    fps: float                         # measured frames per second
    target_fps: float
    frame_ms: float                    # wall time of one frame's work (step + drawing), smoothed
    step_ms: float                     # wall time of env.step (both envs when side by side), smoothed
    denoise_steps: int | None = None   # None in the real game
    max_denoise_steps: int | None = None
    divergence: Divergence | None = None
    recording: str | None = None       # dataset id being recorded
    recorded_steps: int = 0
    message: str | None = None         # a short notice (e.g. "saved ...")
    action: str | None = None          # the last step's action, by name (None since the reset)
    keys: tuple[tuple[str, str], ...] = KEY_HELP   # the help line: (keys, what they do)


@dataclass(frozen=True)
class Line:
    """One HUD row: text in a colour, optionally followed by a bar filled to `bar` (0..1)."""
    text: str
    colour: Colour = WHITE
    bar: float | None = None


def too_slow(state: HudState) -> bool:
    """The frame's work takes longer than the target frame period."""
    return state.frame_ms > 1000.0 / state.target_fps


def hud_lines(state: HudState) -> list[Line]:
    """The HUD rows for `state`, at most HUD_ROWS, most important first."""
    status = (f"{state.mode}{'  PAUSED' if state.paused else ''}   frame {state.frame_index}   "
              f"return {state.episode_return:g}")
    if state.action is not None:
        status += f"   action {state.action}"
    timing = f"FPS {state.fps:.1f}/{state.target_fps:g}   {state.frame_ms:.1f} ms/frame   step {state.step_ms:.1f} ms"
    if state.denoise_steps is not None:
        timing += f"   denoise {state.denoise_steps}/{state.max_denoise_steps}"
    lines = [Line(status, YELLOW if state.paused else WHITE), Line(timing)]
    if state.divergence is not None:
        lines.append(Line(f"divergence  MAE {state.divergence.mae:5.1f}   PSNR {state.divergence.psnr:5.1f} dB", CYAN,
                          bar=min(state.divergence.mae / METER_FULL_MAE, 1.0)))
    if state.recording is not None:
        lines.append(Line(f"REC  {state.recording}   {state.recorded_steps} steps", RED))
    if too_slow(state):
        lines.append(Line(f"can't keep up: {state.frame_ms:.0f} ms per frame > {1000.0 / state.target_fps:.0f} ms "
                          f"at {state.target_fps:g} fps", ORANGE))
    if state.message:
        lines.append(Line(state.message, YELLOW))
    lines = lines[:HUD_ROWS - 1]
    lines.append(Line("  ".join(f"{key} {what}" for key, what in state.keys), GREY))
    return lines


class HudPainter:
    """Draws HUD lines into a pygame surface (pygame.font must be initialised)."""

    def __init__(self, font_size: int = 18):
        import pygame

        self.font = pygame.font.Font(None, font_size)
        self.row_height = self.font.get_linesize()

    @property
    def height(self) -> int:
        """Pixels of the HUD panel (HUD_ROWS rows)."""
        return HUD_ROWS * self.row_height + 2 * PADDING

    def draw(self, surface, top: int, lines: list[Line]) -> None:
        """Clear the panel starting at row `top` of `surface` and draw `lines` in it."""
        import pygame

        surface.fill(BACKGROUND, pygame.Rect(0, top, surface.get_width(), self.height))
        y = top + PADDING
        for line in lines:
            text = self.font.render(line.text, True, line.colour)
            surface.blit(text, (PADDING, y))
            if line.bar is not None:
                x = PADDING + text.get_width() + 2 * PADDING
                bar_height = self.row_height - 4
                pygame.draw.rect(surface, GREY, pygame.Rect(x, y + 1, METER_WIDTH, bar_height), width=1)
                pygame.draw.rect(surface, line.colour, pygame.Rect(x, y + 1, round(METER_WIDTH * line.bar), bar_height))
            y += self.row_height


class Notice:
    """A short message for the HUD that expires `seconds` after it was said."""

    def __init__(self, seconds: float = NOTICE_SECONDS):
        self.seconds = seconds
        self.text: str | None = None
        self.until = 0.0

    def say(self, text: str) -> None:
        self.text, self.until = text, time.perf_counter() + self.seconds

    def current(self) -> str | None:
        return self.text if time.perf_counter() < self.until else None
