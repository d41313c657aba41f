"""The speed benchmark: every speed figure of the project measured in one run on one machine.

    run.py        `python -m train.bench`: runs the sections, the report (ratios first), markdown + JSON
    common.py     BenchConfig and the measuring tools (device label, memory, sync, matmul throughput)
    game.py       a. the real game: steps/s, bare and recording
    model.py      b. the world model through the env's own core: ms/frame, latency, FLOP bound, horizon
    peer.py       c. a peer world model (DIAMOND) timed in the same run
    kernels.py    e. the Triton kernels against the PyTorch path (CUDA)
    profile.py    f. per-operator profile of the env step at several batch sizes
    training.py   d. training iterations/s of every DiT stage on synthetic latents
"""
