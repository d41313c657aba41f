"""Evaluation: world models vs the real game, from the same real starts under the same actions.

    run.py        `python -m train.eval`: its config, the per-model loop, the score cache, the report dict
    rollouts.py   real-game and model rollouts, scored frame by frame (PSNR, SSIM, position, F1, ...)
    rules.py      the rules check (does a dream obey CoinChase's rules?) and controllability ΔPSNR
    report.py     what it writes: markdown tables, plots, side-by-side mp4s
    one_step.py   `python -m train.eval.one_step`: the fast rules probe of the ablations (docs/ablation.md)
    decoders.py   `python -m train.eval.decoders`: autoencoders on held-out frames (PSNR, read-back agreement, MFLOP)
"""
