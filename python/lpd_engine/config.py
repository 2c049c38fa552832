"""Shapes of the two reference models: the LPD transformer and the LlamaGen VQ tokenizer.

A config is everything needed to build a model with no weights in hand, and it can be read
back from a state dict (the official checkpoints carry no config), so a checkpoint alone
suffices. `to_dict`/`from_dict` give the JSON form that bundle manifests store. The unified
embedding table (ARCHITECTURE.md) is laid out here once: token rows, class rows, the
unconditional row (`fake_latent`), the position-query row (`mask_token`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Mapping

from .errors import CheckpointError

_PRESET_SHAPES = {  # name: (dim, depth, heads), lpd-facts.md §1
    "lpd_l": (1024, 24, 16),
    "lpd_xl": (1280, 36, 20),
    "lpd_xxl": (1536, 48, 24),
}
_VQ_STRIDE = 16


def _fields_from_dict(cls, d: Mapping) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    missing, unknown = names - set(d), set(d) - names
    if missing or unknown:
        raise ValueError(f"{cls.__name__}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    return dict(d)


def _shape(sd: Mapping, key: str, ndim: int, what: str, hint: str = "") -> tuple[int, ...]:
    """Shape of sd[key], which must exist and have `ndim` dims, else CheckpointError."""
    if key not in sd:
        raise CheckpointError(f"not {what}: missing key {key!r}{hint}")
    shape = tuple(getattr(sd[key], "shape", ()))
    if len(shape) != ndim:
        raise CheckpointError(f"{what}: {key!r} has shape {list(shape)}, expected {ndim} dims")
    return shape


def _hint(sd: Mapping, prefixes: tuple[str, ...], other: str) -> str:
    """' (this looks like <other>)' when some key starts with one of `prefixes`, else ''."""
    return f" (this looks like {other})" if any(k.startswith(prefixes) for k in sd) else ""


def _count_indices(sd: Mapping, prefix: str) -> int:
    """Number of distinct i among keys `prefix{i}.*`."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


@dataclass(frozen=True)
class LPDConfig:
    """Shape of an LPD transformer (lpd-facts.md §1).

    Example: LPDConfig.preset("lpd_l").table_rows == 16384 + 1000 + 2.
    """

    dim: int
    depth: int
    heads: int
    vocab_size: int
    num_classes: int
    num_tokens: int
    mlp_hidden: int

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LPDConfig.{f.name} must be a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"LPDConfig: dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid(self) -> int:
        """Side of the square token grid: sqrt(num_tokens)."""
        side = math.isqrt(self.num_tokens)
        if side * side != self.num_tokens:
            raise ValueError(f"num_tokens {self.num_tokens} is not a square grid")
        return side

    @property
    def table_rows(self) -> int:
        """Rows of the unified embedding table: V tokens, the classes, fake_latent, mask_token."""
        return self.vocab_size + self.num_classes + 2

    def class_index(self, label: int) -> int:
        """Unified-table row of class `label`."""
        return self.vocab_size + label

    @property
    def uncond_index(self) -> int:
        """Unified-table row of the unconditional class embedding (fake_latent)."""
        return self.vocab_size + self.num_classes

    @property
    def mask_index(self) -> int:
        """Unified-table row of the position-query token (mask_token)."""
        return self.vocab_size + self.num_classes + 1

    @classmethod
    def preset(cls, name: str, image_size: int = 256) -> "LPDConfig":
        """A published shape: name in lpd_l, lpd_xl, lpd_xxl; image_size a multiple of 16."""
        if name not in _PRESET_SHAPES:
            raise ValueError(f"unknown LPD preset {name!r}; known: {sorted(_PRESET_SHAPES)}")
        if image_size <= 0 or image_size % _VQ_STRIDE:
            raise ValueError(f"image_size must be a positive multiple of {_VQ_STRIDE}, got {image_size}")
        dim, depth, heads = _PRESET_SHAPES[name]
        side = image_size // _VQ_STRIDE
        return cls(dim=dim, depth=depth, heads=heads, vocab_size=16384, num_classes=1000,
                   num_tokens=side * side, mlp_hidden=4 * dim)

    @classmethod
    def from_state_dict(cls, sd: Mapping, heads: int | None = None) -> "LPDConfig":
        """Read the shape off an official-layout state dict; heads default to dim // 64.

        Raises CheckpointError when the keys it reads are missing or ill-shaped. Only the
        shape-bearing keys are read here; build_lpd checks the full layout.
        """
        what = "an LPD transformer state dict"
        hint = _hint(sd, ("quantize.", "decoder.", "post_quant_conv."), "a LlamaGen VQ tokenizer state dict")
        vocab_size, dim = _shape(sd, "token_emb.weight", 2, what, hint)
        num_classes, class_dim = _shape(sd, "class_emb.weight", 2, what)
        _, pos_rows, pos_dim = _shape(sd, "pos_embed", 3, what)
        depth = _count_indices(sd, "blocks.")
        if depth == 0:
            raise CheckpointError(f"not {what}: no blocks.{{i}}.* keys{hint}")
        mlp_hidden, fc1_in = _shape(sd, "blocks.0.mlp.fc1.weight", 2, what)
        if not class_dim == pos_dim == fc1_in == dim:
            raise CheckpointError(
                f"{what}: inconsistent widths: token_emb {dim}, class_emb {class_dim}, "
                f"pos_embed {pos_dim}, blocks.0.mlp.fc1 input {fc1_in}")
        if pos_rows < 2:
            raise CheckpointError(f"{what}: pos_embed has {pos_rows} rows, need num_tokens + 1 >= 2")
        if heads is None:
            if dim % 64:
                raise CheckpointError(f"{what}: dim {dim} is not a multiple of 64; pass heads= explicitly")
            heads = dim // 64
        if heads <= 0 or dim % heads:
            raise CheckpointError(f"{what}: dim {dim} is not divisible by heads {heads}")
        return cls(dim=dim, depth=depth, heads=heads, vocab_size=vocab_size, num_classes=num_classes,
                   num_tokens=pos_rows - 1, mlp_hidden=mlp_hidden)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "LPDConfig":
        return cls(**_fields_from_dict(cls, d))


@dataclass(frozen=True)
class VQConfig:
    """Shape of a LlamaGen VQ tokenizer (lpd-facts.md §5).

    ch_mult lists the channel multipliers from full resolution down; the decoder walks them in
    reverse. Attention blocks sit at the lowest resolution (ch_mult[-1]) in both halves.
    """

    codebook_size: int
    codebook_dim: int
    z_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    decoder_res_blocks: int
    encoder_res_blocks: int
    has_encoder: bool

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        ints = ("codebook_size", "codebook_dim", "z_channels", "ch", "decoder_res_blocks", "encoder_res_blocks")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"VQConfig.{name} must be a positive int, got {value!r}")
        if not self.ch_mult or min(self.ch_mult) <= 0:
            raise ValueError(f"VQConfig.ch_mult must be non-empty and positive, got {self.ch_mult}")
        if any((self.ch * m) % 32 for m in self.ch_mult):
            raise ValueError(f"VQConfig: every ch * ch_mult must be divisible by 32 (GroupNorm(32)), "
                             f"got ch {self.ch}, ch_mult {self.ch_mult}")

    @property
    def downsample(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def llamagen_ds16(cls) -> "VQConfig":
        """LlamaGen's vq_ds16_c2i.pt (VQ-16)."""
        return cls(codebook_size=16384, codebook_dim=8, z_channels=256, ch=128, ch_mult=(1, 1, 2, 2, 4),
                   decoder_res_blocks=3, encoder_res_blocks=2, has_encoder=True)

    @classmethod
    def from_state_dict(cls, sd: Mapping) -> "VQConfig":
        """Read the shape off a LlamaGen-layout state dict (full, or decoder only).

        ch comes from encoder.conv_in when the encoder is present; a decoder-only dict fixes
        only the products ch * ch_mult[i], so ch is taken as their gcd (the same network).
        build_vq checks the full layout.
        """
        what = "a LlamaGen VQ state dict"
        hint = _hint(sd, ("blocks.", "token_emb.", "pos_embed"), "an LPD transformer state dict")
        codebook_size, codebook_dim = _shape(sd, "quantize.embedding.weight", 2, what, hint)
        z_channels = _shape(sd, "post_quant_conv.weight", 4, what)[0]
        levels = _count_indices(sd, "decoder.conv_blocks.")
        if levels == 0:
            raise CheckpointError(f"not {what}: no decoder.conv_blocks.{{i}}.* keys{hint}")
        # Decoder level i runs at ch * ch_mult[levels - 1 - i]; its first res block's conv1 has that many outputs.
        widths = [_shape(sd, f"decoder.conv_blocks.{i}.res.0.conv1.weight", 4, what)[0] for i in range(levels)]
        widths.reverse()
        has_encoder = any(k.startswith(("encoder.", "quant_conv.")) for k in sd)
        if has_encoder:
            ch = _shape(sd, "encoder.conv_in.weight", 4, what)[0]
            encoder_res_blocks = _count_indices(sd, "encoder.conv_blocks.0.res.")
        else:
            ch = math.gcd(*widths)
            encoder_res_blocks = 2
        if any(w % ch for w in widths):
            raise CheckpointError(f"{what}: decoder level widths {widths} are not multiples of ch {ch}")
        try:
            return cls(codebook_size=codebook_size, codebook_dim=codebook_dim, z_channels=z_channels, ch=ch,
                       ch_mult=tuple(w // ch for w in widths),
                       decoder_res_blocks=_count_indices(sd, "decoder.conv_blocks.0.res."),
                       encoder_res_blocks=encoder_res_blocks, has_encoder=has_encoder)
        except ValueError as e:
            raise CheckpointError(f"{what}: {e}") from None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "VQConfig":
        return cls(**_fields_from_dict(cls, d))
