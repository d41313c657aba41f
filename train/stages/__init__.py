"""The training stages, in the order they run; each is `python -m train.stages.<name> key=value ...`.

    0 record.py         a real game -> a Minari dataset
    1 autoencoder.py    frames <-> latents; encodes the dataset once (the latent cache)
    1b decoder.py       the decoder sharpened on sprite pixels, or a new (cell) one (encoder and latents frozen)
    1c codes.py         no frame reader: learned codes where the past and the keys fail to predict the frame
    1d events.py        the event model: where the random entities (a reader's labels, or the codes) go next
    1e score_bar.py     with a reader: the displayed score painted and read in latent space
    2 teacher.py        bidirectional DiT: the real score and the critic's init
    3 ode_init.py       few-step causal student regressed on the teacher's ODE trajectories
    4 self_forcing.py   the student trained on its own rollouts (DMD / SiD / GAN)
    - forcing.py        baselines: teacher forcing (mode=tf), diffusion forcing (mode=df)

`python -m train.pipeline` runs them in this order. What they share is in train.common.
"""

ORDER = ("record", "autoencoder", "decoder", "codes", "events", "teacher", "ode_init", "self_forcing", "forcing")
