"""The viewer's window: the game frames scaled up (two in a row, labelled, when side by side) above
the HUD panel, and the clock that holds the frame rate. The only module that opens a display.
"""
from __future__ import annotations

from envs.video import upscale
from viewer.compare import GAP
from viewer.hud import BACKGROUND, HudPainter, Line

MIN_WINDOW_WIDTH = 640   # pixels, so the HUD's lines fit at small scales
LABEL_COLOUR = (255, 255, 255)


class Screen:
    """A pygame window for frames of one size, `scale` screen pixels per game pixel (SDL dummy driver works)."""

    def __init__(self, caption: str, scale: int):
        import pygame

        pygame.display.init()   # not pygame.init(): no audio wanted
        pygame.font.init()
        pygame.display.set_caption(caption)
        self.scale = scale
        self.clock = pygame.time.Clock()
        self.hud = HudPainter()
        self.surface = None

    def layout(self, frame_shape: tuple[int, ...], frames: int) -> None:
        """Open (or resize) the window for `frames` frames of `frame_shape` in a row, plus the HUD panel."""
        import pygame

        height, width = frame_shape[:2]
        width = frames * width + (frames - 1) * GAP
        size = (max(width * self.scale, MIN_WINDOW_WIDTH), height * self.scale + self.hud.height)
        if self.surface is None or self.surface.get_size() != size:
            self.surface = pygame.display.set_mode(size)

    def events(self) -> list:
        import pygame

        return pygame.event.get()

    def draw(self, view, labels: tuple[str, ...], frame_width: int, lines: list[Line]) -> None:
        """Show `view` (H, W, 3) uint8 centred, `labels` over its frames of `frame_width` pixels, the HUD below."""
        import pygame

        image = pygame.surfarray.make_surface(upscale(view, self.scale).swapaxes(0, 1))
        self.surface.fill(BACKGROUND)
        left = (self.surface.get_width() - image.get_width()) // 2
        self.surface.blit(image, (left, 0))
        if len(labels) > 1:
            for i, label in enumerate(labels):
                text = self.hud.font.render(label, True, LABEL_COLOUR)
                self.surface.blit(text, (left + i * (frame_width + GAP) * self.scale + 4, 4))
        self.hud.draw(self.surface, view.shape[0] * self.scale, lines)
        pygame.display.flip()

    def wait(self, fps: float) -> None:
        """Sleep so that calls come at most `fps` times a second."""
        self.clock.tick(fps)

    def close(self) -> None:
        import pygame

        pygame.quit()
        self.surface = None
