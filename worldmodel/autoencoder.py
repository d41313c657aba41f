"""Frame autoencoder: uint8 frames (B, H, W, 3) <-> latents (B, C, h, w), h = H / 2**levels.

Owns the conv encoder/decoder and the uint8 <-> float conversion. Latents returned by `encode` are
divided by the stored `latent_scale` (unit variance over the training set), so the DiT sees
unit-scale data. Runs every frame in the env: channels_last, no normalisation layers, small widths.
"""
from __future__ import annotations

import torch
from torch import nn

from worldmodel.config import AutoencoderConfig


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class Autoencoder(nn.Module):
    """Strided-conv encoder and transposed-conv decoder; residual blocks only at the two lowest resolutions.

    The heavy lifting happens at 8x8 and 16x16, so a decode costs ~0.2 GFLOP per 64x64 frame.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        widths = config.widths                                    # e.g. (32, 64, 128) at 1/2, 1/4, 1/8
        enc: list[nn.Module] = []
        previous = 3
        for width in widths:
            enc += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.SiLU()]
            previous = width
        enc += [ResBlock(previous), ResBlock(previous), nn.SiLU(), nn.Conv2d(previous, config.latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 1), ResBlock(widths[-1]), ResBlock(widths[-1])]
        previous = widths[-1]
        for level, width in enumerate(list(reversed(widths[:-1])) + [widths[0] // 2]):
            dec += [nn.SiLU(), nn.ConvTranspose2d(previous, width, 4, stride=2, padding=1)]
            if level == 0:
                dec.append(ResBlock(width))
            previous = width
        dec += [nn.SiLU(), nn.Conv2d(previous, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latent_scale", torch.ones(()))

    @staticmethod
    def to_float(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], channels_last memory."""
        x = frames.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
        return images.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def encode_float(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, h, w) unit-scale latents."""
        return (self.encoder(images) / self.latent_scale).contiguous()

    def decode_float(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) unit-scale latents -> (B, 3, H, W) in about [-1, 1]."""
        return self.decoder((latents * self.latent_scale).contiguous(memory_format=torch.channels_last))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> latents (B, C, h, w)."""
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"encode takes uint8 frames (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        return self.encode_float(self.to_float(frames))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, C, h, w) -> uint8 frames (B, H, W, 3)."""
        return self.to_uint8(self.decode_float(latents))
