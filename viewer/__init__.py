"""The viewer: play any checkpoint's dreamed game, or its real game, in a pygame window or headless (play.py).

A package of its own, beside Model (worldmodel/), Games (envs/) and Trainers (train/): it is the one
part that opens a window and reads keys, so `import envs` (a headless trainer, a Gymnasium user)
never pulls in pygame or any of this. It only draws, reads keys and calls env.reset / env.step, using
the envs' public API. Nothing outside the viewer and play.py imports it (tests/test_imports.py).

One job per module:
- config.py     PlayConfig: every setting once (default + help); the command line is built from it
- overrides.py  `key=value` env-constructor overrides: parsing, checking against the constructor
- game.py       make_env, and Game: the played env, who plays it (keys or a policy), reset / step
- realgame.py   the checkpoint's real game (its env id): opened, resized to the dream's frames, its keys
- compare.py    the real game beside the dream: shared start, divergence, the two frames in a row
- keymap.py     keys -> actions (from the game's key map or action names) and commands; HeldKeys, the human player
- recording.py  F5: a Minari dataset plus an mp4 of it, one recording at a time
- meters.py     fps, ms per frame, ms per step
- hud.py        the HUD's lines and their drawing, notices
- screen.py     the pygame window: frames, labels, HUD, frame-rate clock
- app.py        Viewer: the frame loop that wires the pieces
"""
