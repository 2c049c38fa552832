"""Random-weight state dicts in the OFFICIAL layouts, for tests across the project.

The key names and shapes are written out here from the documentation (lpd-facts.md §1 for the
LPD transformer, §5 for the LlamaGen VQ), not taken from our modules' state_dict(), so a test
that loads them strictly checks our layout against the documented one. Values are random with
sane scales (embeddings std 0.02, norms near 1, linear/conv weights ~ 1/sqrt(fan_in)) so that
logits and images are not degenerate. Deterministic in `seed`.
"""

from __future__ import annotations

import torch

from lpd_engine.reference import LPDConfig, VQConfig


def tiny_lpd_config(num_tokens: int = 16, heads: int = 4) -> LPDConfig:
    """D 64, depth 2, V 37, 10 classes; num_tokens must be a square."""
    return LPDConfig(dim=64, depth=2, heads=heads, vocab_size=37, num_classes=10, num_tokens=num_tokens,
                     mlp_hidden=256)


def tiny_vq_config(has_encoder: bool = True) -> VQConfig:
    """Codebook 29 x 8, z 32, ch 32, ch_mult (1, 2): 2 pixels per token; LlamaGen's res-block counts."""
    return VQConfig(codebook_size=29, codebook_dim=8, z_channels=32, ch=32, ch_mult=(1, 2),
                    decoder_res_blocks=3, encoder_res_blocks=2, has_encoder=has_encoder)


class _Filler:
    """Adds named random tensors to a dict."""

    def __init__(self, seed: int):
        self.sd: dict[str, torch.Tensor] = {}
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, name: str, shape, std: float, mean: float = 0.0) -> None:
        self.sd[name] = mean + std * torch.randn(*shape, generator=self.gen)

    def norm(self, prefix: str, channels: int) -> None:
        """LayerNorm / GroupNorm affine: weight near 1, bias near 0."""
        self.normal(f"{prefix}.weight", (channels,), 0.1, mean=1.0)
        self.normal(f"{prefix}.bias", (channels,), 0.1)

    def linear(self, prefix: str, c_out: int, c_in: int, bias: bool = True) -> None:
        self.normal(f"{prefix}.weight", (c_out, c_in), c_in ** -0.5)
        if bias:
            self.normal(f"{prefix}.bias", (c_out,), 0.02)

    def conv(self, prefix: str, c_out: int, c_in: int, kernel: int) -> None:
        self.normal(f"{prefix}.weight", (c_out, c_in, kernel, kernel), (c_in * kernel * kernel) ** -0.5)
        self.normal(f"{prefix}.bias", (c_out,), 0.02)


def make_lpd_state_dict(config: LPDConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """The documented LPD checkpoint["model"] layout for `config`, random values."""
    d, v, n = config.dim, config.vocab_size, config.num_tokens
    f = _Filler(seed)
    f.normal("class_emb.weight", (config.num_classes, d), 0.02)
    f.normal("token_emb.weight", (v, d), 0.02)
    f.normal("fake_latent", (1, d), 0.02)
    f.normal("pos_embed", (1, n + 1, d), 0.02)
    f.norm("z_proj_ln", d)
    f.normal("mask_token", (1, 1, d), 0.02)
    for i in range(config.depth):
        p = f"blocks.{i}"
        f.norm(f"{p}.norm1", d)
        f.linear(f"{p}.attn.qkv", 3 * d, d)
        f.linear(f"{p}.attn.proj", d, d)
        f.norm(f"{p}.norm2", d)
        f.linear(f"{p}.mlp.fc1", config.mlp_hidden, d)
        f.linear(f"{p}.mlp.fc2", d, config.mlp_hidden)
    f.norm("norm", d)
    f.linear("head", v, d, bias=False)
    return f.sd


def _resnet(f: _Filler, prefix: str, c_in: int, c_out: int) -> None:
    f.norm(f"{prefix}.norm1", c_in)
    f.conv(f"{prefix}.conv1", c_out, c_in, 3)
    f.norm(f"{prefix}.norm2", c_out)
    f.conv(f"{prefix}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        f.conv(f"{prefix}.nin_shortcut", c_out, c_in, 1)


def _attn(f: _Filler, prefix: str, c: int) -> None:
    f.norm(f"{prefix}.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        f.conv(f"{prefix}.{name}", c, c, 1)


def _mid(f: _Filler, prefix: str, c: int) -> None:
    _resnet(f, f"{prefix}.mid.0", c, c)
    _attn(f, f"{prefix}.mid.1", c)
    _resnet(f, f"{prefix}.mid.2", c, c)


def make_vq_state_dict(config: VQConfig, seed: int = 0, with_encoder: bool = True) -> dict[str, torch.Tensor]:
    """The documented LlamaGen VQ layout for `config` (encoder and quant_conv only if with_encoder)."""
    f = _Filler(seed)
    f.normal("quantize.embedding.weight", (config.codebook_size, config.codebook_dim), 1.0)
    f.sd["quantize.codebook_used"] = torch.zeros(65536)
    f.conv("post_quant_conv", config.z_channels, config.codebook_dim, 1)
    widths = [config.ch * m for m in config.ch_mult]  # full resolution first
    levels = len(widths)

    # Decoder: conv_blocks.0 is the lowest resolution, with the attention blocks.
    f.conv("decoder.conv_in", widths[-1], config.z_channels, 3)
    _mid(f, "decoder", widths[-1])
    c_in = widths[-1]
    for i, width in enumerate(reversed(widths)):
        for j in range(config.decoder_res_blocks):
            _resnet(f, f"decoder.conv_blocks.{i}.res.{j}", c_in if j == 0 else width, width)
            if i == 0:
                _attn(f, f"decoder.conv_blocks.{i}.attn.{j}", width)
        if i < levels - 1:
            f.conv(f"decoder.conv_blocks.{i}.upsample.conv", width, width, 3)
        c_in = width
    f.norm("decoder.norm_out", widths[0])
    f.conv("decoder.conv_out", 3, widths[0], 3)

    if with_encoder:
        # Encoder: conv_blocks.0 is full resolution; attention at the last (lowest) level.
        f.conv("encoder.conv_in", config.ch, 3, 3)
        c_in = config.ch
        for i, width in enumerate(widths):
            for j in range(config.encoder_res_blocks):
                _resnet(f, f"encoder.conv_blocks.{i}.res.{j}", c_in if j == 0 else width, width)
                if i == levels - 1:
                    _attn(f, f"encoder.conv_blocks.{i}.attn.{j}", width)
            if i < levels - 1:
                f.conv(f"encoder.conv_blocks.{i}.downsample.conv", width, width, 3)
            c_in = width
        _mid(f, "encoder", widths[-1])
        f.norm("encoder.norm_out", widths[-1])
        f.conv("encoder.conv_out", config.z_channels, widths[-1], 3)
        f.conv("quant_conv", config.codebook_dim, config.z_channels, 1)
    return f.sd
