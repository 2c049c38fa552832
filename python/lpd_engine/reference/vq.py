"""The LlamaGen VQ tokenizer in plain PyTorch (lpd-facts.md §5), with the official key layout.

Codes -> images (`decode_codes`) is what generation needs; images -> codes (`encode_codes`) is
for editing and for training the demo model, so the encoder is optional: a decoder-only state
dict (no encoder.*, no quant_conv.*) builds a model without it. `quantize.codebook_used` is a
training-time buffer of the official checkpoint; it is kept only so that strict loads accept it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError
from ..config import VQConfig

_GN_GROUPS, _GN_EPS = 32, 1e-6
CODEBOOK_USED_LEN = 65536


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_GN_GROUPS, channels, eps=_GN_EPS)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """GN, swish, conv3x3, GN, swish, conv3x3, plus a 1x1 nin_shortcut when channels change."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1 q/k/v/proj_out, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).reshape(b, c, h * w) for conv in (self.q, self.k, self.v))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c ** -0.5, dim=2)  # [b, query, key]
        out = torch.bmm(v, weights.transpose(1, 2))  # [b, c, query]
        return x + self.proj_out(out.reshape(b, c, h, w))


class Resample(nn.Module):
    """Nearest 2x upsample then conv3x3, or pad (0,1,0,1) then stride-2 conv3x3."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Level(nn.Module):
    """One resolution: `res` blocks, each followed by its `attn` block where there are any."""

    def __init__(self, c_in: int, c_out: int, num_res: int, with_attn: bool):
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(num_res))
        self.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(num_res if with_attn else 0))

    def forward(self, x: Tensor) -> Tensor:
        for i, res in enumerate(self.res):
            x = res(x)
            if self.attn:
                x = self.attn[i](x)
        return x


def _mid(channels: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels)])


class Encoder(nn.Module):
    """[B, 3, H, W] -> [B, z_channels, H / ds, W / ds]; levels from full resolution down."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        c_in = cfg.ch
        for i, width in enumerate(widths):
            level = Level(c_in, width, cfg.encoder_res_blocks, with_attn=i == len(widths) - 1)
            if i < len(widths) - 1:
                level.downsample = Resample(width, up=False)
            self.conv_blocks.append(level)
            c_in = width
        self.mid = _mid(widths[-1])
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.conv_blocks):
            h = level(h)
            if i < len(self.conv_blocks) - 1:
                h = level.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, z_channels, h, w] -> [B, 3, h * ds, w * ds]; conv_blocks.0 is the lowest resolution."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        widths = [cfg.ch * m for m in reversed(cfg.ch_mult)]
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[0], 3, padding=1)
        self.mid = _mid(widths[0])
        self.conv_blocks = nn.ModuleList()
        c_in = widths[0]
        for i, width in enumerate(widths):
            level = Level(c_in, width, cfg.decoder_res_blocks, with_attn=i == 0)
            if i < len(widths) - 1:
                level.upsample = Resample(width, up=True)
            self.conv_blocks.append(level)
            c_in = width
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for i, level in enumerate(self.conv_blocks):
            h = level(h)
            if i < len(self.conv_blocks) - 1:
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Quantizer(nn.Module):
    """The codebook [codebook_size, codebook_dim]; entries are L2-normalised when used."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_dim)
        self.register_buffer("codebook_used", torch.zeros(CODEBOOK_USED_LEN))

    def normalized(self) -> Tensor:
        return F.normalize(self.embedding.weight, p=2, dim=-1)


class VQModel(nn.Module):
    """LlamaGen VQ. Example: images = VQModel(VQConfig.llamagen_ds16()).decode_codes(codes [B, 256])
    gives [B, 3, 256, 256]."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.quantize = Quantizer(config)
        if config.has_encoder:
            self.encoder = Encoder(config)
            self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_dim, config.z_channels, 1)
        self.decoder = Decoder(config)

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes [B, h*w] long (raster, h == w) -> images [B, 3, h*ds, w*ds], float, about [-1, 1]."""
        batch, length = codes.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"decode_codes: {length} codes per image do not form a square grid")
        # Contiguous like LlamaGen's, so the convolutions pick the same kernels (bitwise equal on CPU).
        z = self.quantize.normalized()[codes].reshape(batch, side, side, -1).permute(0, 3, 1, 2).contiguous()
        return self.decoder(self.post_quant_conv(z))

    def encode_codes(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [-1, 1] (H, W multiples of ds) -> codes [B, (H/ds)*(W/ds)] long, raster.

        Nearest codebook entry with both sides L2-normalised, by the squared distance
        |z|^2 + |e|^2 - 2 z.e as LlamaGen computes it (same argmin as the cosine, same ties).
        """
        if not self.config.has_encoder:
            raise CheckpointError("encode_codes needs the VQ encoder, and this model was built without one")
        ds = self.config.downsample
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % ds or images.shape[3] % ds:
            raise ValueError(f"encode_codes: images {list(images.shape)}, "
                             f"expected [B, 3, H, W] with H and W multiples of {ds}")
        z = self.quant_conv(self.encoder(images))
        batch = z.shape[0]
        z = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), p=2, dim=-1)
        e = self.quantize.normalized()
        dist = z.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * (z @ e.t())
        return dist.argmin(dim=1).reshape(batch, -1)


def to_uint8(images: Tensor) -> np.ndarray:
    """[B, 3, H, W] float about [-1, 1] -> uint8 [B, H, W, 3]: round-half-even(clip((x+1)/2*255, 0, 255)),
    in float32 as the official evaluation script does. E.g. x = 0 -> 127.5 -> 128; x = -1/255 -> 127."""
    x = ((images.detach().float().cpu() + 1) / 2).numpy()
    x = np.round(np.clip(x * np.float32(255), 0, 255))
    return np.ascontiguousarray(x.astype(np.uint8).transpose(0, 2, 3, 1))
