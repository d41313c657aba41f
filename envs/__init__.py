"""Gymnasium environments of dreamgym: the bundled real game and the dreamed world-model envs.

Importing this package registers the ids, so `import envs` then `gymnasium.make("dreamgym/CoinChase-v0")`,
or in one line `gymnasium.make("envs:dreamgym/CoinChase-v0")`:
- dreamgym/CoinChase-v0          the real game (envs.coinchase)
- dreamgym/CoinChase-Dream-v0    the bundled world model of CoinChase (envs.world_model_env)
- dreamgym/WorldModel-v0         any checkpoint: gymnasium.make("dreamgym/WorldModel-v0", checkpoint=PATH)

The Games part of the repo: it knows no trainer and no screen (the pygame viewer is the `viewer`
package; `render_mode="human"` opens a plain window through envs.window, importing pygame only then).
"""
from gymnasium.envs.registration import register, registry

from envs.coinchase import PALETTE, Action, CoinChaseEnv

__all__ = ["BUNDLED_ENV_ID", "PALETTE", "Action", "CoinChaseEnv"]

BUNDLED_ENV_ID = "dreamgym/CoinChase-v0"   # the bundled checkpoint's game: the tools' default real game

_IDS = {
    "dreamgym/CoinChase-v0": dict(entry_point="envs.coinchase:CoinChaseEnv"),
    "dreamgym/CoinChase-Dream-v0": dict(entry_point="envs.world_model_env:WorldModelEnv",
                                        vector_entry_point="envs.world_model_env:WorldModelVectorEnv"),
    "dreamgym/WorldModel-v0": dict(entry_point="envs.world_model_env:WorldModelEnv",
                                   vector_entry_point="envs.world_model_env:WorldModelVectorEnv"),
    "dreamgym/Catch-v0": dict(entry_point="envs.catch:CatchEnv"),
    "dreamgym/Snake-v0": dict(entry_point="envs.snake:SnakeEnv"),
    "dreamgym/Breakout-v0": dict(entry_point="envs.breakout:BreakoutEnv"),
    "dreamgym/MinAtar-Asterix-v0": dict(entry_point="envs.external:MinAtarRGBEnv", kwargs=dict(game="Asterix")),
    "dreamgym/MinAtar-Breakout-v0": dict(entry_point="envs.external:MinAtarRGBEnv", kwargs=dict(game="Breakout")),
    "dreamgym/MinAtar-Freeway-v0": dict(entry_point="envs.external:MinAtarRGBEnv", kwargs=dict(game="Freeway")),
    "dreamgym/MinAtar-Seaquest-v0": dict(entry_point="envs.external:MinAtarRGBEnv", kwargs=dict(game="Seaquest")),
    "dreamgym/MinAtar-SpaceInvaders-v0": dict(entry_point="envs.external:MinAtarRGBEnv",
                                              kwargs=dict(game="SpaceInvaders")),
}
for _id, _kwargs in _IDS.items():
    if _id not in registry:
        register(id=_id, **_kwargs)
