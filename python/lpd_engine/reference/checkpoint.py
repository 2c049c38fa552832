"""Official checkpoints -> reference models, with layout errors a person can act on.

The config is read off the state dict, the model is built on the meta device (no memory, no
init), its expected keys and shapes are compared with the dict's, and only then are real tensors
allocated and loaded strictly. So a wrong dict (a VQ dict given to build_lpd, a truncated
checkpoint, a different width) fails fast with a CheckpointError naming the missing, unexpected
or ill-shaped keys, never with a torch traceback, and a big model is never allocated twice.
"""

from __future__ import annotations

import argparse
import os
import pickle
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..config import LPDConfig, VQConfig
from .transformer import LPDTransformer
from .vq import CODEBOOK_USED_LEN, VQModel

_LISTED = 8  # key names quoted per kind of problem


def _load(path_or_dict) -> Mapping:
    """A file's content (torch.load, weights only; the official files also pickle their argparse
    arguments, which is allowed) or the dict itself."""
    if isinstance(path_or_dict, Mapping):
        return path_or_dict
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise CheckpointError(f"expected a path or a dict, got {type(path_or_dict).__name__}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(path_or_dict, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{os.fspath(path_or_dict)}: cannot be read as a weights-only torch checkpoint: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{os.fspath(path_or_dict)}: holds a {type(content).__name__}, not a dict")
    return content


def _unwrap(content: Mapping) -> dict:
    """content["model"] when present (the official wrapper), else content."""
    sd = content["model"] if "model" in content else content
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"the checkpoint's 'model' entry is a {type(sd).__name__}, not a state dict")
    return dict(sd)


def load_lpd_state_dict(path_or_dict) -> dict:
    """LPD transformer state dict from a checkpoint path, an official {"model": sd} dict or a bare sd."""
    return _unwrap(_load(path_or_dict))


def load_vq_state_dict(path_or_dict) -> dict:
    """LlamaGen VQ state dict from a checkpoint path, a {"model": sd} dict or a bare sd."""
    return _unwrap(_load(path_or_dict))


def _names(items) -> str:
    """The first few of `items`, sorted, comma-separated."""
    items = sorted(items)
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


def check_layout(model: nn.Module, sd: Mapping, what: str) -> None:
    """CheckpointError unless sd has exactly model's state-dict keys, each a tensor of the same shape."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = []
    missing, unexpected = expected.keys() - sd.keys(), sd.keys() - expected.keys()
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    not_tensors = [k for k in expected.keys() & sd.keys() if not isinstance(sd[k], torch.Tensor)]
    if not_tensors:
        problems.append(f"not tensors: {_names(not_tensors)}")
    bad = [f"{k} {list(sd[k].shape)} (expected {list(expected[k])})"
           for k in expected.keys() & sd.keys() if k not in not_tensors and tuple(sd[k].shape) != expected[k]]
    if bad:
        problems.append(f"wrong shapes: {_names(bad)}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def _build(factory: Callable[[], nn.Module], sd: Mapping, what: str) -> nn.Module:
    with torch.device("meta"):
        model = factory()
    check_layout(model, sd, what)
    model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # e.g. a tensor that cannot be copied into float32
        raise CheckpointError(f"{what}: {str(e).splitlines()[0]}") from None
    return model.eval()


def build_lpd(state_dict: Mapping, heads: int | None = None) -> LPDTransformer:
    """LPDTransformer (float32, CPU, eval) with the given official-layout weights; heads default D // 64."""
    config = LPDConfig.from_state_dict(state_dict, heads=heads)
    return _build(lambda: LPDTransformer(config), state_dict, f"LPD transformer state dict ({config})")


def build_vq(state_dict: Mapping) -> VQModel:
    """VQModel (float32, CPU, eval) with the given LlamaGen-layout weights, full or decoder only.

    A dict without `quantize.codebook_used` (unused at inference) is accepted; the buffer is zeros.
    """
    config = VQConfig.from_state_dict(state_dict)
    if "quantize.codebook_used" not in state_dict:
        state_dict = {**state_dict, "quantize.codebook_used": torch.zeros(CODEBOOK_USED_LEN)}
    return _build(lambda: VQModel(config), state_dict, f"LlamaGen VQ state dict ({config})")
