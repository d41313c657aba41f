"""dreamgym's world model: autoencoder, causal DiT with KV cache, flow sampler, the one rollout, checkpoints.

Knows nothing of environments, trainers or screens. `worldmodel.load(path)` opens a checkpoint.
"""
from worldmodel.checkpoint import CheckpointError, WorldModel, load

__all__ = ["CheckpointError", "WorldModel", "load"]
