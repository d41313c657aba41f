"""Frame autoencoder: uint8 frames (B, H, W, 3) <-> latents (B, C, h, w), h = H / 2**levels.

Owns the conv encoder, the two decoder architectures (`AutoencoderConfig.decoder`) and the uint8 <->
float conversion. Latents returned by `encode` are divided by the stored `latent_scale` (unit variance
over the training set), so the DiT sees unit-scale data. Runs every frame in the env: channels_last,
no normalisation layers, small widths.

Decoders (p = 2**levels pixels per latent cell; in the bundled game one latent cell is one game cell):
    conv  transposed convs back up through `widths`, residual blocks at 1/8 and 1/4 (~167 MFLOP per 64x64 frame)
    cell  residual blocks at latent resolution, then a 1x1 conv to 3*p*p channels that `pixel_shuffle`
          unfolds into each cell's own p x p pixels (~11 MFLOP per frame at width 64, one block)
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


def conv_decoder(config: AutoencoderConfig) -> nn.Sequential:
    """(B, C, h, w) -> (B, 3, H, W): transposed convs, each doubling the resolution through reversed `widths`."""
    widths = config.widths
    dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 1), ResBlock(widths[-1]),
                            ResBlock(widths[-1])]
    previous = widths[-1]
    for level, width in enumerate(list(reversed(widths[:-1])) + [widths[0] // 2]):
        dec += [nn.SiLU(), nn.ConvTranspose2d(previous, width, 4, stride=2, padding=1)]
        if level == 0:
            dec.append(ResBlock(width))
        previous = width
    dec += [nn.SiLU(), nn.Conv2d(previous, 3, 3, padding=1)]
    return nn.Sequential(*dec)


def cell_decoder(config: AutoencoderConfig) -> nn.Sequential:
    """(B, C, h, w) -> (B, 3, h*p, w*p): every conv at latent resolution; cell (i, j)'s features become its
    p x p pixels."""
    cell = 2 ** config.downsample_levels
    width = config.cell_width
    return nn.Sequential(nn.Conv2d(config.latent_channels, width, 1),                  # (B, width, h, w)
                         *[ResBlock(width) for _ in range(config.cell_blocks)],
                         nn.SiLU(), nn.Conv2d(width, 3 * cell * cell, 1),               # (B, 3*p*p, h, w)
                         nn.PixelShuffle(cell))                                         # (B, 3, h*p, w*p)


DECODER_BUILDERS = {"conv": conv_decoder, "cell": cell_decoder}


class Autoencoder(nn.Module):
    """Strided-conv encoder (residual blocks at the lowest resolution) and the configured decoder."""

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
        self.decoder = DECODER_BUILDERS[config.decoder](config)
        self.register_buffer("latent_scale", torch.ones(()))

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """Everything but the decoder: the encoder's weights and the latent scale (what fixes the latents)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("decoder.")}

    @staticmethod
    def to_float(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], channels_last memory."""
        x = frames.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
        return (images.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)
                .permute(0, 2, 3, 1).contiguous())

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
