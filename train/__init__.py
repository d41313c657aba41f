"""Trainers: everything that makes or measures a world model; configs in configs/<name>.yaml.

    stages/      the training stages in order: record, autoencoder, teacher, ode_init, self_forcing (+ forcing)
    common/      what they share: cli (hydra), loop, distributed, latents, dit_stage, losses, untrained
    pipeline.py  `python -m train.pipeline`: every stage in one resumable command
    eval/        `python -m train.eval`: world models vs the real game
    probe/       `python -m train.probe`: the learned state probe
    bench/       `python -m train.bench`: every speed figure in one run
    rl.py        `python -m train.rl`: PPO in the real game or the dream, judged in the real game
    bundle.py    `python -m train.bundle`: a trained checkpoint -> the bundled one
"""
