"""Pixel primitives shared by the real games (CoinChase, Catch, Snake, Breakout) and their frame readers.

Owns the 3x5 digit font (`DIGIT_MASKS`) and how the games draw a frame's floor and score bar, a number and
a row of life pips into a (64, 64, 3) uint8 frame, and the matching deterministic reads from per-pixel
palette labels: nearest palette colour per pixel, the digits of a number, which pips are lit, where the
best-filled box of a size lies. Drawing and reading live side by side so a reader is exact on its game's
frames by design.
Shapes: N frames, H x W pixels; masks are (N, H, W) bool, labels (N, H, W) int64.
"""
from __future__ import annotations

import numpy as np

# 3x5 digit font, one string per row, '#' = lit.
_FONT = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
}
DIGIT_MASKS = {d: np.array([[ch == "#" for ch in row] for row in rows]) for d, rows in _FONT.items()}
DIGIT_H, DIGIT_W = DIGIT_MASKS["0"].shape     # 5 x 3 pixels per digit
DIGIT_PITCH = DIGIT_W + 1                     # one pixel between digits
DIGIT_TOLERANCE = 1                           # wrong pixels a digit may have and still read (if no other glyph ties)
CHUNK = 256                                   # frames labelled at once (bounds the distance matrix's memory)

_GLYPHS = np.stack([DIGIT_MASKS[str(d)] for d in range(10)]).reshape(10, -1)      # (10, 15) bool


def bar_frame(floor: np.ndarray, bar: np.ndarray, bar_rows: int, size: int = 64) -> np.ndarray:
    """A new (size, size, 3) uint8 frame of `floor` colour whose top `bar_rows` rows are `bar` colour."""
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = floor
    frame[:bar_rows] = bar
    return frame


def number_left(digits: int, width: int) -> int:
    """Left pixel of a `digits`-wide number right-aligned in a `width`-pixel bar (as CoinChase places its score)."""
    return width - DIGIT_PITCH * digits - 1


def draw_number(frame: np.ndarray, value: int, digits: int, top: int, left: int, colour: np.ndarray) -> None:
    """Draw `value` modulo 10**digits, zero padded, into frame (H, W, 3); (top, left): the first digit's corner."""
    text = f"{value % 10 ** digits:0{digits}d}"
    for i, ch in enumerate(text):
        x = left + DIGIT_PITCH * i
        frame[top:top + DIGIT_H, x:x + DIGIT_W][DIGIT_MASKS[ch]] = colour


def read_number(lit: np.ndarray, digits: int, top: int, left: int) -> np.ndarray:
    """(N, H, W) bool digit-coloured pixels -> (N,) int64 the number drawn by `draw_number`; -1 where a digit
    matches no glyph within DIGIT_TOLERANCE pixels, or two glyphs equally well."""
    n = len(lit)
    number = np.zeros(n, np.int64)
    for i in range(digits):
        x = left + DIGIT_PITCH * i
        cells = lit[:, top:top + DIGIT_H, x:x + DIGIT_W].reshape(n, 1, -1)          # (N, 1, 15)
        mismatch = (cells != _GLYPHS).sum(2)                                       # (N, 10)
        best, low = mismatch.argmin(1), mismatch.min(1)
        readable = ((mismatch == low[:, None]).sum(1) == 1) & (low <= DIGIT_TOLERANCE)
        number = np.where(readable & (number >= 0), number * 10 + best, -1)
    return number


def pip_boxes(n_max: int, top: int, left: int, size: int, pitch: int) -> list[tuple[slice, slice]]:
    """The (rows, cols) slices of n_max square pips of `size` pixels, `pitch` pixels apart, left to right."""
    return [(slice(top, top + size), slice(left + pitch * i, left + pitch * i + size)) for i in range(n_max)]


def draw_pips(frame: np.ndarray, lit: int, boxes: list[tuple[slice, slice]], colour: np.ndarray) -> None:
    """Fill the first `lit` pip boxes of frame (H, W, 3) with `colour`."""
    for rows, cols in boxes[:lit]:
        frame[rows, cols] = colour


# The bar layout Catch, Snake and Breakout share: the score's digits right-aligned in the 64-pixel bar,
# and (Catch, Breakout) up to MAX_LIVES life pips on its left.
SCORE_DIGITS = 3
SCORE_TOP, SCORE_LEFT = 1, number_left(SCORE_DIGITS, 64)
MAX_LIVES = 5                                 # life pips the bar has room for
PIPS = pip_boxes(MAX_LIVES, top=2, left=2, size=4, pitch=6)


def read_pips(mask: np.ndarray, boxes: list[tuple[slice, slice]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool pip-coloured pixels -> (lives (N,) int64 lit pips, tidy (N,) bool).

    A pip is lit when at least half its pixels are pip-coloured; `tidy` says every pip box is all pip or
    all not (one pixel of slack each) and the lit pips are the first ones, as `draw_pips` draws them."""
    counts = np.stack([mask[:, rows, cols].sum((1, 2)) for rows, cols in boxes], 1)     # (N, n_max)
    area = (boxes[0][0].stop - boxes[0][0].start) * (boxes[0][1].stop - boxes[0][1].start)
    lit = 2 * counts >= area
    clean = ((counts <= 1) | (counts >= area - 1)).all(1)
    prefix = (np.diff(lit.astype(np.int64), axis=1) <= 0).all(1)                        # no unlit pip before a lit one
    return lit.sum(1).astype(np.int64), clean & prefix


def palette_labels(frames: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) int64 index of each pixel's nearest palette colour (ties: lowest index)."""
    colours = palette.astype(np.float32)                                     # (P, 3); exact for uint8 values
    norms = (colours ** 2).sum(1)
    labels = np.empty(frames.shape[:-1], np.int64)
    for start in range(0, len(frames), CHUNK):
        block = frames[start:start + CHUNK]
        distance = norms - 2.0 * (block.reshape(-1, 3).astype(np.float32) @ colours.T)      # (M, P), |x|^2 dropped
        labels[start:start + CHUNK] = distance.argmin(1).reshape(block.shape[:-1])
    return labels


def window_sums(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, H, W) bool -> (N, H-h+1, W-w+1) int64 pixels set in each h x w window (by its top-left pixel)."""
    n, height, width = mask.shape
    table = np.zeros((n, height + 1, width + 1), np.int64)
    table[:, 1:, 1:] = mask.cumsum(1).cumsum(2)
    return table[:, h:, w:] - table[:, :-h, w:] - table[:, h:, :-w] + table[:, :-h, :-w]


def find_box(mask: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool -> ((N, 2) int64 (row, col) of the h x w window holding most set pixels (first in
    row-major order on ties), (N,) int64 pixels set in it). A frame with no set pixel gives (-1, -1), 0."""
    sums = window_sums(mask, h, w)
    flat = sums.reshape(len(mask), -1)
    best = flat.argmax(1)
    count = flat.max(1)
    corner = np.stack([best // sums.shape[2], best % sums.shape[2]], 1).astype(np.int64)
    corner[count == 0] = -1
    return corner, count


def frame_labels(frames: np.ndarray, palette: np.ndarray, game: str, size: int = 64) -> np.ndarray:
    """(N, size, size, 3) uint8 frames of `game` -> their palette labels (N, size, size); a clear error otherwise."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
        raise ValueError(f"expected {game} frames (N, {size}, {size}, 3), got {frames.shape}")
    return palette_labels(frames, palette)


def paddle_and_ball(labels: np.ndarray, top: int, ball_label: int, ball: int, paddle_label: int, paddle_h: int,
                    paddle_w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ball's and the paddle's boxes in palette labels (N, H, W) below row `top`: ball (N, 2) row, col and its
    count (N,), then the paddle's (as find_box gives them; rows in frame coordinates)."""
    play = labels[:, top:]
    ball_box, ball_count = find_box(play == ball_label, ball, ball)
    ball_box[ball_count > 0, 0] += top
    paddle_box, paddle_count = find_box(play == paddle_label, paddle_h, paddle_w)
    paddle_box[paddle_count > 0, 0] += top
    return ball_box, ball_count, paddle_box, paddle_count
