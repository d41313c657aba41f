"""Gymnasium environments of dreamgym: the bundled real game and (later) the dreamed world-model env.

Importing this package registers the ids, so `import envs` then `gymnasium.make("dreamgym/CoinChase-v0")`,
or in one line `gymnasium.make("envs:dreamgym/CoinChase-v0")`.
"""
from gymnasium.envs.registration import register, registry

from envs.coinchase import PALETTE, CoinChaseEnv

__all__ = ["PALETTE", "CoinChaseEnv"]

if "dreamgym/CoinChase-v0" not in registry:
    register(id="dreamgym/CoinChase-v0", entry_point="envs.coinchase:CoinChaseEnv")
