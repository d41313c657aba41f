"""Stage 0: record a real game into a Minari dataset, the training data of every later stage.

Plays episodes of any Gymnasium env with Discrete actions under a scripted policy (envs.policies; `random`, random
keys held for random stretches, plays any Discrete(n) env) until `episodes` episodes or `frames` frames, whichever
comes first (the last episode is cut there, marked truncated), and writes them with envs.recording.RecordMinari:
lossless, crash safe (nothing appears under the dataset id unless the run finishes), an existing id refused unless
`overwrite=true`. Frames are stretched to `resize_to` x `resize_to` (envs.recording.resize_frame: the aspect ratio is
not kept; area averaging down, nearest neighbour up). The frames are the env's observations, or with
`render_only=true` its `render()` frames (Gymnasium's AddRenderObservation), for envs whose observation is no image.
`from_dataset=ID` instead converts an existing Minari dataset of image observations and Discrete actions (one that
`minari.load_dataset(ID)` opens) into this format, frames resized, as if it had been recorded here.

    python -m train.stages.record episodes=200 policy=random dataset_id=coinchase/random-v0
    python -m train.stages.record policy=seeker epsilon=0.2 dataset_id=coinchase/seeker-v0
    python -m train.stages.record env_id=ALE/Pong-v5 dataset_id=pong/random-v0 frames=100000   # needs dreamgym[atari]
    python -m train.stages.record env_id=CartPole-v1 render_only=true dataset_id=cartpole/random-v0
    python -m train.stages.record from_dataset=atari/pong/expert-v0 dataset_id=pong/expert-v0
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from tqdm import tqdm

from envs.policies import make_policy
from envs.recording import RecordMinari, check_recordable, make_env
from train.common.cli import hydra_main


@dataclass
class RecordConfig:
    env_id: str = ""                          # any Gymnasium id with uint8 RGB frames and Discrete actions
                                              #   (configs/record.yaml: the bundled game)
    episodes: int = 100                       # episodes to record (at most)
    frames: int | None = None                 # frames (steps) to record at most, whatever the episodes (None: no cap)
    render_only: bool = False                 # record the env's render() frames (render_mode="rgb_array") instead of
                                              #   its observations: for envs whose observation is not an image
    from_dataset: str = ""                    # an existing Minari dataset id to convert instead of playing the env
    policy: str = "random"                    # a policy of envs.policies (random for any game; some games have
                                              #   scripted ones, which a game plug-in names)
    epsilon: float = 0.1                      # seeker: chance of a random (legal) move per step
    min_repeat: int = 1                       # random: each action is held for a uniform number
    max_repeat: int = 8                       #   of steps in [min_repeat, max_repeat]
    seed: int = 0                             # seeds every episode's env reset and policy
    dataset_id: str = "game/random-v0"        # Minari id, (namespace/)name-v<version>
    root: str = "data/minari"                 # datasets root; the dataset goes to <root>/<dataset_id>
    overwrite: bool = False                   # replace an existing dataset (built aside, then swapped in)
    resize_to: int = 64                       # stored frames are resize_to x resize_to (cv2 INTER_AREA)
    max_episode_steps: int | None = None      # time limit per episode (None: the env's own)
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)   # passed to gymnasium.make, e.g.
                                              #   +env_kwargs.NAME=VALUE (a game plug-in's record_events sets some)
    progress: bool = True                     # show a tqdm bar


def episode_seed(seed: int, episode: int) -> int:
    """Independent, reproducible env seed of one episode (recorded in the dataset)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def make_recorded_env(cfg: RecordConfig) -> gym.Env:
    """The env a recording plays: `env_id` with its kwargs, its render() frames as observations with render_only."""
    kwargs = dict(cfg.env_kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    if cfg.render_only:
        kwargs["render_mode"] = "rgb_array"
    env = make_env(cfg.env_id, **kwargs)
    return gym.wrappers.AddRenderObservation(env, render_only=True) if cfg.render_only else env


def record(cfg: RecordConfig) -> Path:
    """Record up to `cfg.episodes` episodes (and `cfg.frames` frames); returns the dataset path <root>/<dataset_id>."""
    if cfg.episodes < 1 or (cfg.frames is not None and cfg.frames < 1):
        raise ValueError(f"episodes and frames must be >= 1, got {cfg.episodes} and {cfg.frames}")
    if cfg.from_dataset:
        return convert(cfg)
    if not cfg.env_id:
        raise ValueError("env_id is empty: name the Gymnasium id to record (or from_dataset=ID to convert)")
    env = make_recorded_env(cfg)
    try:
        check_recordable(env)
        policy = make_policy(cfg.policy, int(env.action_space.n), np.random.default_rng(cfg.seed), epsilon=cfg.epsilon,
                             min_repeat=cfg.min_repeat, max_repeat=cfg.max_repeat)
        recorder = RecordMinari(env, cfg.dataset_id, cfg.root, overwrite=cfg.overwrite, resize_to=cfg.resize_to,
                                algorithm_name=f"dreamgym/{cfg.policy}", metadata={"record": dataclasses.asdict(cfg)})
    except BaseException:
        env.close()
        raise
    budget = cfg.frames or np.inf
    with recording(recorder):
        start = time.perf_counter()
        bar = tqdm(range(cfg.episodes), unit="ep", desc=f"record {cfg.dataset_id}", disable=not cfg.progress)
        for episode in bar:
            obs, info = recorder.reset(seed=episode_seed(cfg.seed, episode))
            policy.reset(np.random.default_rng([cfg.seed, episode]))
            done = False
            while not done and recorder.total_steps < budget:
                obs, _, terminated, truncated, info = recorder.step(policy(obs, info))
                done = terminated or truncated
            bar.set_postfix(steps=recorder.total_steps,
                            steps_per_s=f"{recorder.total_steps / (time.perf_counter() - start):.0f}")
            if recorder.total_steps >= budget:    # the open episode is stored truncated
                break
    return finish(recorder)


@contextlib.contextmanager
def recording(recorder: RecordMinari) -> Iterator[None]:
    """An interrupted recording leaves no dataset (the staging dir is removed)."""
    try:
        yield
    except BaseException:
        recorder.abort()
        recorder.close()
        raise


def finish(recorder: RecordMinari) -> Path:
    path = recorder.finalize()
    recorder.close()
    assert path is not None, "at least one step was recorded"
    return path


class Replay(gym.Env):
    """Plays back one stored episode at a time: `reset(options={"episode": e})`, then `step(a)` returns the episode's
    next observation, reward and flags (the action given must be the stored one)."""

    metadata = {"render_modes": []}

    def __init__(self, observation_space: spaces.Box, n_actions: int):
        self.observation_space, self.action_space = observation_space, spaces.Discrete(n_actions)
        self.episode, self.t = None, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode, self.t = options["episode"], 0
        return self.episode.observations[0], {}

    def step(self, action):
        e, self.t = self.episode, self.t + 1
        last = self.t == len(e.actions)
        return (e.observations[self.t], float(e.rewards[self.t - 1]), bool(e.terminations[self.t - 1]),
                bool(e.truncations[self.t - 1]) or (last and not e.terminations[self.t - 1]), {})


def convert(cfg: RecordConfig) -> Path:
    """Write `cfg.from_dataset` (a Minari dataset with image observations and Discrete actions) as `cfg.dataset_id`,
    frames resized, through the same writer as a recording (at most `episodes` episodes and `frames` frames)."""
    import minari  # noqa: PLC0415

    try:
        source = minari.load_dataset(cfg.from_dataset)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"from_dataset={cfg.from_dataset!r}: minari cannot open it ({error})") from error
    obs, actions = source.observation_space, source.action_space
    if not (isinstance(actions, spaces.Discrete) and isinstance(obs, spaces.Box) and obs.dtype == np.uint8
            and len(obs.shape) == 3 and obs.shape[2] == 3):
        raise ValueError(f"from_dataset={cfg.from_dataset!r}: needs uint8 (H, W, 3) observations and Discrete actions, "
                         f"got {obs} and {actions}")
    recorder = RecordMinari(Replay(obs, int(actions.n)), cfg.dataset_id, cfg.root, overwrite=cfg.overwrite,
                            resize_to=cfg.resize_to, algorithm_name=f"from {cfg.from_dataset}",
                            metadata={"record": dataclasses.asdict(cfg)})
    budget = cfg.frames or np.inf
    with recording(recorder):
        for index, episode in enumerate(source.iterate_episodes()):
            if index >= cfg.episodes or recorder.total_steps >= budget:
                break
            recorder.reset(options={"episode": episode})
            for action in episode.actions:
                if recorder.total_steps >= budget:
                    break
                recorder.step(int(action))
    return finish(recorder)


def main(cfg: RecordConfig) -> None:
    path = record(cfg)
    what = cfg.from_dataset or f"{cfg.env_id} with the {cfg.policy} policy"
    print(f"recorded {what} -> {path}")


if __name__ == "__main__":
    hydra_main("record", RecordConfig, main)
