"""The state probe: a small conv net that reads the player cell and the score from CoinChase frames.

    model.py     the net (`Probe.read(frames)`), `save_probe`, `load_probe`
    run.py       `python -m train.probe`: its config, real frames, training, held-out accuracy
"""
