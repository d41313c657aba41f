"""Evaluation: world models vs the real game, from the same real starts under the same actions.

Any game:
    game.py       `python -m train.eval.game`: any checkpoint against its real game (PSNR vs copy-last-frame, a
                  real-above / dream-below picture) and, where the game has an evaluation spec, the rules check;
                  an autoencoder alone against the same check (the ceiling of its dreams)
    game_rules.py the generic rules check over a game's evaluation spec (envs.game_spec)
    codes.py      `python -m train.eval.codes`: the learned codes of a latent cache against the real random events
    rl_curves.py  `python -m train.eval.rl_curves`: PPO curves and tables from train.rl runs

The bundled game's evaluation (CoinChase's frame reader and rules; the scenarios of docs/evaluation.md):
    run.py        `python -m train.eval`: its config, the per-model loop, the score cache, the report dict
    rollouts.py   real-game and model rollouts, scored frame by frame (PSNR, SSIM, position, F1, ...)
    rules.py      the rules check (does a dream obey CoinChase's rules?) and controllability ΔPSNR
    report.py     what it writes: markdown tables, plots, side-by-side mp4s
    one_step.py   `python -m train.eval.one_step`: the fast rules probe of the ablations (docs/ablation.md)
    events.py     `python -m train.eval.events`: the event model against the real game's draws
    decoders.py   `python -m train.eval.decoders`: autoencoders on held-out frames (PSNR, read-back agreement, MFLOP)
    picture.py    `python -m train.eval.picture`: real-above / dream-below pictures of the bundled game
"""
