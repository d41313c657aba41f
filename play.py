"""Play a world model's dreamed game — or its real game — in a pygame window, or headless into an mp4.

    python play.py                                  # the bundled CoinChase world model
    python play.py checkpoint=runs/x/ckpt           # any checkpoint (or --checkpoint runs/x/ckpt)
    python play.py --checkpoint runs/x/ckpt --denoise-steps 2 max_episode_steps=500
    python play.py --real                           # the real game (the checkpoint's; default CoinChase)
    python play.py --headless --frames 300 --policy random --video out.mp4 checkpoint=runs/x/ckpt

A checkpoint names the Gymnasium id of the game it was trained on (its config's env_id). Keys
(viewer/keymap.py): the game's own key map when it offers one (get_keys_to_action), else arrows/WASD
and Space for the actions its names say (get_action_meanings: UP, LEFT, FIRE, UPRIGHT, ...), and always
0..9 (Shift + 0..9 for 10..19) for action ids; the HUD names the action
taken. Controls: R reset, P pause, . single step, [ ] denoise steps, Tab side-by-side with the
checkpoint's real game (same keys, same start, live divergence; its frames resized to the dream's;
a notice says why when the checkpoint names no game or it is not installed), F5 start/finish
recording (a Minari dataset plus an mp4 of it), Esc quit. Trailing `key=value` overrides go to the
env's constructor (WorldModelEnv, or the real game's with --real), except checkpoint=PATH.
`python play.py --help` lists the flags (declared once, in viewer/config.py).

This file is only the entry point: the viewer lives in the viewer/ package (see its __init__).
"""
from __future__ import annotations

import sys
import time

from viewer.app import Viewer
from viewer.config import parse_args


def main(argv: list[str] | None = None) -> int:
    config, parser = parse_args(argv, description=__doc__.split("\n")[0])
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
        episode_return, step_ms = viewer.game.episode_return, viewer.meters.step_ms
        viewer.close()
    if config.headless:
        seconds = time.perf_counter() - started
        print(f"played {frames} frames in {seconds:.1f} s ({frames / seconds:.1f} fps, {step_ms:.1f} ms per step), "
              f"last return {episode_return:g}" + (f"; video {config.video}" if config.video else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
