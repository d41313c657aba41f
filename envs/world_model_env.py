"""Gymnasium environments that dream: WorldModelEnv (one) and WorldModelVectorEnv (N in one forward).

Both are thin Gymnasium shells over `envs.dream.DreamCore`; the single env is the batch-1 case
of the same core, so there is one copy of the dynamics, and both share `DreamShell`: the facts a
caller may read (denoise steps and their maximum, the start contexts) and one copy of the episode
bookkeeping (reward rounding, termination threshold, truncation, the step infos).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.dream import DreamCore, DreamStep
from envs.window import FrameWindow

OPTION_KEYS = ("frames", "actions", "start_index")


def _check_action(space: spaces.Discrete, action: Any) -> int:
    if isinstance(action, np.ndarray) and action.shape == ():
        action = action.item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) or not space.contains(action):
        raise gym.error.InvalidAction(f"action {action!r} ({type(action).__name__}) is not in the action space {space}")
    return int(action)


def _start(core: DreamCore, rng: np.random.Generator,
           options: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The real context a reset primes with: (T, H, W, 3) frames, (T,) actions, a torch noise seed, and the
    bank index used (-1 for frames given in options)."""
    options = dict(options or {})
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; accepted: {OPTION_KEYS}")
    index = int(rng.integers(core.bank_size)) if options.get("start_index") is None else int(options["start_index"])
    if not 0 <= index < core.bank_size:
        raise ValueError(f"start_index {index} outside the checkpoint's bank of {core.bank_size} contexts")
    frames, actions = core.start_context(index)
    if "frames" in options:
        frames = np.asarray(options["frames"])
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != core.frame_shape:
            raise ValueError(f"options['frames'] must be uint8 (T, {', '.join(map(str, core.frame_shape))}), "
                             f"got {frames.dtype} {frames.shape}")
        null = np.full(len(frames), core.n_actions, dtype=np.int64)
        actions = np.asarray(options.get("actions", null), dtype=np.int64)
        if actions.shape != (len(frames),) or actions.min() < 0 or actions.max() > core.n_actions:
            raise ValueError(f"options['actions'] must be {len(frames)} ids in 0..{core.n_actions} "
                             f"({core.n_actions} = none), got {actions}")
        index = -1
    return frames, actions, int(rng.integers(2**62)), index


class DreamShell:
    """What WorldModelEnv and WorldModelVectorEnv share over their `DreamCore` (`self.core`): the public
    facts about the model and one copy of the episode bookkeeping of N rows (N = 1 for the single env).

    Bookkeeping: rewards are the reward head's prediction, rounded when `round_rewards`; a row
    terminates when the termination head's probability exceeds `termination_threshold` and truncates
    after `max_episode_steps` steps; step infos hold, per row, `denoise_steps`, `frame_index`,
    `termination_prob`, `raw_reward`, and `step_ms` only when `timing_info` (wall time differs from
    run to run, which Gymnasium's determinism check refuses).
    """

    core: DreamCore

    def _init_episodes(self, num_envs: int, max_episode_steps: int, termination_threshold: float, round_rewards: bool,
                       timing_info: bool) -> None:
        self.max_episode_steps = max_episode_steps
        self.termination_threshold = termination_threshold
        self.round_rewards = round_rewards
        self.timing_info = timing_info
        self._steps = np.zeros(num_envs, np.int64)   # steps since each row's reset

    def _score(self, out: DreamStep, restarted: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Rewards (N,) float64, terminated (N,), truncated (N,) bool and the step info (arrays of N) of
        one batched step. Rows in `restarted` were reset by this step (the vector env's autoreset): they
        report reward 0, no flags, frame_index 0."""
        raw = out.rewards.astype(np.float64)
        probs = out.terminations.astype(np.float64)
        rewards = np.round(raw) if self.round_rewards else raw.copy()
        terminated = probs > self.termination_threshold
        self._steps += 1
        truncated = (self._steps >= self.max_episode_steps) & ~terminated
        if restarted is not None and len(restarted):
            self._steps[restarted] = 0
            for values in (raw, probs, rewards):
                values[restarted] = 0.0
            terminated[restarted] = truncated[restarted] = False
        info = {"denoise_steps": np.full(len(raw), self.denoise_steps, np.int64), "frame_index": self._steps.copy(),
                "termination_prob": probs, "raw_reward": raw}
        if self.timing_info:
            info["step_ms"] = np.full(len(raw), out.step_ms)
        return rewards, terminated, truncated, info

    @property
    def denoise_steps(self) -> int:
        """Denoising steps per frame, settable at run time within 1..max_denoise_steps."""
        return self.core.denoise_steps

    @denoise_steps.setter
    def denoise_steps(self, steps: int) -> None:
        self.core.denoise_steps = steps

    @property
    def max_denoise_steps(self) -> int:
        """The few-step schedule the model was trained on: denoise_steps can be 1..this."""
        return self.core.sampler.max_steps

    @property
    def bank_size(self) -> int:
        """How many real start contexts the checkpoint holds (`reset(options={"start_index": i})`)."""
        return self.core.bank_size

    @property
    def context_length(self) -> int:
        """Frames a reset primes the model with (the length of every start context in the bank)."""
        return len(self.core.start_context(0)[0])

    def start_context(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Start context `index` of the bank: frames (T, H, W, 3) uint8, actions (T,) int64 (the action
        before each frame; `n_actions` = none)."""
        if not 0 <= index < self.core.bank_size:
            raise IndexError(f"start context {index} outside the checkpoint's bank of {self.core.bank_size}")
        return self.core.start_context(index)


class WorldModelEnv(DreamShell, gym.Env):
    """Play the bundled game — or any recorded game — inside a world model.

    ## Description
    Every frame is dreamed: `step` runs `worldmodel.rollout.next_chunk`, `denoise_steps` few-step
    flow updates of a causal DiT over a rolling KV cache, then decodes the latent to pixels. The
    default checkpoint (`envs/checkpoints/coinchase`) was trained on CoinChase (see README for
    its stage and training command).

    ## Action Space
    `Discrete(n)` from the checkpoint; for CoinChase `Discrete(5)`:

    | id | key       | meaning    |
    |----|-----------|------------|
    | 0  | (none)    | stay       |
    | 1  | Up / W    | move up    |
    | 2  | Down / S  | move down  |
    | 3  | Left / A  | move left  |
    | 4  | Right / D | move right |

    ## Observation Space
    `Box(0, 255, (64, 64, 3), uint8)`, HWC RGB, decoded from the generated latent each step.

    ## Rewards
    The reward head's prediction on the clean cache-writing pass, rounded to the nearest integer
    (`round_rewards=True`, CoinChase pays 0 or 1) or raw.

    ## Starting State
    `reset(seed, options)` picks a real start context from the checkpoint's bank with
    `self.np_random` and primes the KV cache with it; the first observation is its last frame.
    Options: `start_index` (bank entry), or `frames` (T, H, W, 3) uint8 with optional `actions` (T,).

    ## Episode End
    1. Termination: the termination head's probability exceeds `termination_threshold`.
    2. Truncation: `max_episode_steps` steps (also settable by `gymnasium.make(..., max_episode_steps=)`).
    3. A full cache window does not end the episode: the oldest frames roll out of it.

    ## Arguments
    | name                  | type        | default   | description |
    |-----------------------|-------------|-----------|-------------|
    | checkpoint            | str or None | None      | checkpoint dir; None = the bundled CoinChase model |
    | denoise_steps         | int or None | None      | 1..max; None = the checkpoint's default |
    | device                | str         | "cpu"     | torch device ("cuda" on a GPU) |
    | dtype                 | str         | "auto"    | DiT weights "float32", "bfloat16", "float16" or "auto" (below) |
    | render_mode           | str or None | None      | "rgb_array" or "human" (pygame window) |
    | max_episode_steps     | int         | 1000      | truncation horizon |
    | termination_threshold | float       | 0.5       | on the termination head's probability |
    | round_rewards         | bool        | True      | round predicted rewards to integers |
    | timing_info           | bool        | False     | also put `step_ms` in step infos (below) |
    | cuda_graph            | bool        | True      | on CUDA, replay each step as a captured CUDA graph (below) |
    | compile               | bool        | False     | torch.compile the step, CPU or CUDA (below) |

    dtype="auto": float32 at batch 1 and on CUDA, bfloat16 from 16 envs on a CPU with native bf16 (faster
    there, same rules check; `envs.dream.pick_dtype`). timing_info: wall time differs run to run, so
    `check_env`'s determinism check needs it off. cuda_graph=False runs eager kernels; the frames are the
    same. compile: minutes of compiling at the first step, then faster frames.

    ## Info
    reset: `start_index`. step: `denoise_steps`, `frame_index`, `termination_prob`, `raw_reward`, and
    `step_ms` (wall time of the dreamed step) with `timing_info=True`.

    ## Model facts
    `denoise_steps` (settable), `max_denoise_steps`, `bank_size`, `context_length`, `start_context(i)`.

    ## Determinism
    Same seed + same actions give the same frames on the same device and dtype (each env owns a
    noise stream, `worldmodel.noise.RowNoise`, seeded from `np_random`). CPU is supported. With
    dtype="auto" a vector env of 16 or more envs on a CPU runs bfloat16: pass dtype="float32" for
    rows that reproduce single envs frame for frame.

    ## Vectorized environment
    `WorldModelVectorEnv`: N envs in one batched forward, autoreset mode NEXT_STEP, per-env cache reset,
    the same info keys with one entry per env.

    ## Example
    >>> import gymnasium as gym, envs
    >>> env = gym.make("dreamgym/CoinChase-Dream-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> obs, reward, terminated, truncated, info = env.step(4)

    ## Version History
    v0: first release.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(self, checkpoint: str | Path | None = None, denoise_steps: int | None = None, device: str = "cpu",
                 dtype: str = "auto", render_mode: str | None = None, max_episode_steps: int = 1000,
                 termination_threshold: float = 0.5, round_rewards: bool = True, timing_info: bool = False,
                 cuda_graph: bool = True, compile: bool = False):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.core = DreamCore(checkpoint, 1, device, dtype, denoise_steps, cuda_graph, compile)
        self.render_mode = render_mode
        self._init_episodes(1, max_episode_steps, termination_threshold, round_rewards, timing_info)
        self.action_space = spaces.Discrete(self.core.n_actions)
        self.observation_space = spaces.Box(0, 255, self.core.frame_shape, np.uint8)
        self._frame: np.ndarray | None = None
        self._needs_reset = True
        self._window = FrameWindow("dreamgym")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        frames, actions, noise_seed, index = _start(self.core, self.np_random, options)
        self._frame = self.core.reset_rows(np.array([0]), [noise_seed], frames[None], actions[None],
                                           np.array([index]))[0]
        self._steps[:], self._needs_reset = 0, False
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), {"start_index": index}

    def step(self, action):
        action = _check_action(self.action_space, action)
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step(), "
                                        "and again after the episode terminated or truncated")
        out = self.core.step(np.array([action]))
        self._frame = out.frames[0]
        rewards, terminations, truncations, infos = self._score(out)
        reward, terminated, truncated = float(rewards[0]), bool(terminations[0]), bool(truncations[0])
        info = {key: values[0].item() for key, values in infos.items()}
        self._needs_reset = terminated or truncated
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        if self.render_mode == "human":
            self._window.show(self._frame)
        return None

    def close(self) -> None:
        self._window.close()


class WorldModelVectorEnv(DreamShell, VectorEnv):
    """N dreamed envs stepped by one batched forward; autoreset mode NEXT_STEP.

    `reset(seed=s)` seeds env i with s + i, so env i reproduces `WorldModelEnv` reset with seed s + i
    under the same actions (within float tolerance of batched matmuls; in the same dtype: the default
    "auto" runs bfloat16 from 16 envs on a CPU with native bf16, `envs.dream.pick_dtype`). After an env terminates or
    truncates, its next `step` resets it (the action is ignored) and returns the reset observation
    with reward 0, both flags False and frame_index 0. Infos have the single env's keys, each an
    array with one entry per env (reset: `start_index`; step: see `DreamShell`). `reset_rows(rows)`
    re-primes some envs at once and leaves the others running (envs.sb3's same-step reset).
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, checkpoint: str | Path | None = None, denoise_steps: int | None = None,
                 device: str = "cpu", dtype: str = "auto", max_episode_steps: int = 1000,
                 termination_threshold: float = 0.5, round_rewards: bool = True, render_mode: str | None = None,
                 timing_info: bool = False, cuda_graph: bool = True, compile: bool = False):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.core = DreamCore(checkpoint, num_envs, device, dtype, denoise_steps, cuda_graph, compile)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self._init_episodes(num_envs, max_episode_steps, termination_threshold, round_rewards, timing_info)
        self.single_action_space = spaces.Discrete(self.core.n_actions)
        self.single_observation_space = spaces.Box(0, 255, self.core.frame_shape, np.uint8)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_envs)]
        self._frames = np.zeros((num_envs, *self.core.frame_shape), np.uint8)
        self._done = np.zeros(num_envs, bool)
        self._needs_reset = True

    def reset_rows(self, rows: Any, seeds: list[int | None] | None = None, options: dict[str, Any] | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Re-prime the given rows with new start contexts now, leaving the other rows as they are.

        rows: env indices (R,); seeds: one per row to reseed its generator (None: each row keeps its own
        generator); options: as in `reset`. Returns the rows' reset frames (R, H, W, 3) uint8 and infos
        {"start_index": (R,) bank indices, -1 for frames given in options}."""
        from gymnasium.utils import seeding

        rows = np.asarray(rows, np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_envs or len(np.unique(rows)) != len(rows)):
            raise ValueError(f"rows must be distinct env indices in 0..{self.num_envs - 1}, got {rows.tolist()}")
        if seeds is not None:
            if len(seeds) != len(rows):
                raise ValueError(f"got {len(seeds)} seeds for {len(rows)} rows")
            for row, seed in zip(rows, seeds, strict=True):
                self._rngs[row] = seeding.np_random(seed)[0]
        starts = [_start(self.core, self._rngs[r], options) for r in rows]
        if len(rows):
            self._frames[rows] = self.core.reset_rows(rows, [s[2] for s in starts], np.stack([s[0] for s in starts]),
                                                      np.stack([s[1] for s in starts]),
                                                      np.array([s[3] for s in starts]))
        self._steps[rows] = 0
        self._done[rows] = False
        return self._frames[rows].copy(), {"start_index": np.array([s[3] for s in starts], np.int64)}

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        seeds = ([None if seed is None else seed + i for i in range(self.num_envs)]
                 if not isinstance(seed, list) else seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        obs, info = self.reset_rows(np.arange(self.num_envs), seeds, options)
        self._needs_reset = False
        return obs, info

    def step(self, actions):
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not self.action_space.contains(actions.astype(np.int64)):
            raise gym.error.InvalidAction(f"actions {actions!r} are not in the action space {self.action_space}")
        finished = np.flatnonzero(self._done)
        out = self.core.step(actions.astype(np.int64))   # every row advances; finished rows are re-primed below
        rewards, terminated, truncated, info = self._score(out, restarted=finished)
        self._frames[:] = out.frames
        if len(finished):
            self.reset_rows(finished)
        self._done = terminated | truncated
        return self._frames.copy(), rewards, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        return self._frames.copy() if self.render_mode == "rgb_array" else None
