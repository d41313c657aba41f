"""The viewer's timing meters for the HUD: frames per second, ms of work per frame, ms per env.step.

Exponential moving averages (weight SMOOTHING on the newest value), started at the first value.
"""
from __future__ import annotations

SMOOTHING = 0.1   # weight of the newest frame in the moving averages


def smooth(average: float, value: float, first: bool) -> float:
    return value if first else (1 - SMOOTHING) * average + SMOOTHING * value


class Meters:
    """Measured rates, fed once per tick (`ticked`) and once per env step (`stepped`)."""

    def __init__(self) -> None:
        self.fps = 0.0        # ticks per second
        self.frame_ms = 0.0   # wall time of one tick's work (events, step, drawing), without the wait
        self.step_ms = 0.0    # wall time of one env step (both games when side by side)
        self.last_tick: float | None = None

    def stepped(self, ms: float) -> None:
        self.step_ms = smooth(self.step_ms, ms, self.step_ms == 0.0)

    def ticked(self, started: float, finished: float) -> None:
        """One tick's work ran from `started` to `finished` (time.perf_counter seconds)."""
        self.frame_ms = smooth(self.frame_ms, (finished - started) * 1e3, self.last_tick is None)
        if self.last_tick is not None:
            self.fps = smooth(self.fps, 1.0 / max(started - self.last_tick, 1e-9), self.fps == 0.0)
        self.last_tick = started
