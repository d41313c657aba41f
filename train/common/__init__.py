"""What the train commands share: the command line, the training loop and the DiT stages' plumbing.

    cli.py           hydra_main / compose: configs/<name>.yaml over a config dataclass (every command)
    loop.py          LoopConfig, resumable TrainState, run_loop (every stage)
    distributed.py   data parallelism under torchrun
    latents.py       the latent cache the autoencoder writes and the DiT stages read
    dit_stage.py     DiTStageConfig, DistillStageConfig, the flow / head losses, EMA, checkpoint writing
    losses.py        Self Forcing's distribution-matching losses: DMD, SiD, GAN
    plugins.py       the game plug-ins (configs/games/) and the frame reader each may name
    events.py        the entity labels a frame reader writes beside the latent cache
    untrained.py     randomly initialised checkpoints of any game for tests, benchmarks and smoke runs
"""
