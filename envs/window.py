"""The pygame window behind `render_mode="human"` of the envs in this package (CoinChase, the dream).

One small class: `show(frame)` opens the window on first use, sized to the frame times `scale`, and
blits the frame scaled up; `close()` closes it. pygame is imported only when a window is shown,
so `import envs` never pulls it in.
"""
from __future__ import annotations

import numpy as np


class FrameWindow:
    """A pygame window showing RGB uint8 (H, W, 3) frames, each pixel `scale` x `scale` screen pixels."""

    def __init__(self, caption: str, scale: int = 8):
        self.caption, self.scale = caption, scale
        self._surface = None
        self._clock = None

    def show(self, frame: np.ndarray, fps: float | None = None) -> None:
        """Draw `frame`; with `fps`, wait so that calls come at most `fps` times a second."""
        import pygame  # only when a window is asked for

        if self._surface is None:
            pygame.init()
            self._surface = pygame.display.set_mode((frame.shape[1] * self.scale, frame.shape[0] * self.scale))
            pygame.display.set_caption(self.caption)
            self._clock = pygame.time.Clock()
        pygame.event.pump()
        image = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        self._surface.blit(pygame.transform.scale(image, self._surface.get_size()), (0, 0))
        pygame.display.flip()
        if fps:
            self._clock.tick(fps)

    def close(self) -> None:
        if self._surface is not None:
            import pygame

            pygame.display.quit()
            pygame.quit()
            self._surface = self._clock = None
