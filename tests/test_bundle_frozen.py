"""The bundled dream is frozen: the same seeds and keys give the same frames, rewards and terminations.

Three rollouts of 200 steps of the bundled CoinChase checkpoint (float32, 4 denoising steps) under seeded
random keys are compared with the ones stored in tests/data/bundle_rollouts.npz, on one torch thread. On a
CPU of the kind that stored them (torch's CPU capability) every pixel must be equal; on another kind, float
reductions run in another order, so a pixel may round one or two levels apart (never an event or a key).
A change to the model, the rollout, the sampler or the env that alters the dream fails here; a deliberate
change regenerates the file with `python tests/test_bundle_frozen.py` and says why in its commit.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

STORED = Path(__file__).parent / "data" / "bundle_rollouts.npz"
ROLLOUTS, STEPS = 3, 200
ROUNDING = 2            # on another CPU kind: the most levels a pixel may differ by ...
ROUNDING_SHARE = 1e-4   # ... in at most this share of the values


def bundle_rollouts() -> dict[str, np.ndarray]:
    """frames (R, S, 64, 64, 3) uint8, rewards (R, S) float32, terminations (R, S) bool, actions (R, S) int64;
    a terminated rollout is reset with its next seed and goes on."""
    from envs.world_model_env import WorldModelEnv

    env = WorldModelEnv(dtype="float32", max_episode_steps=10_000)
    out = {"frames": [], "rewards": [], "terminations": [], "actions": []}
    for rollout in range(ROLLOUTS):
        keys = np.random.default_rng(rollout).integers(env.action_space.n, size=STEPS)
        env.reset(seed=100 * rollout)
        rows = {name: [] for name in out}
        for step, action in enumerate(keys):
            obs, reward, terminated, _, _ = env.step(int(action))
            for name, value in zip(out, (obs, reward, terminated, action), strict=True):
                rows[name].append(value)
            if terminated:
                env.reset(seed=100 * rollout + step + 1)
        for name in out:
            out[name].append(np.stack(rows[name]))
    env.close()
    return {"frames": np.stack(out["frames"]).astype(np.uint8), "rewards": np.stack(out["rewards"]).astype(np.float32),
            "terminations": np.stack(out["terminations"]).astype(bool),
            "actions": np.stack(out["actions"]).astype(np.int64)}


def test_bundled_dream_is_unchanged(one_torch_thread):
    stored = np.load(STORED)
    now = bundle_rollouts()
    np.testing.assert_array_equal(now["actions"], stored["actions"])
    np.testing.assert_array_equal(now["rewards"], stored["rewards"])
    np.testing.assert_array_equal(now["terminations"], stored["terminations"])
    import torch

    difference = np.abs(now["frames"].astype(np.int16) - stored["frames"])
    if str(stored["cpu"]) == torch.backends.cpu.get_cpu_capability():
        assert int((difference > 0).sum()) == 0, f"{int((difference > 0).sum())} values differ from the stored rollouts"
    else:
        assert difference.max() <= ROUNDING and (difference > 0).mean() <= ROUNDING_SHARE, \
            f"frames differ beyond rounding: max {difference.max()}, share {(difference > 0).mean():.2e}"


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    np.savez_compressed(STORED, cpu=np.array(torch.backends.cpu.get_cpu_capability()), **bundle_rollouts())
    print(f"wrote {STORED} ({STORED.stat().st_size / 1e6:.2f} MB)")
