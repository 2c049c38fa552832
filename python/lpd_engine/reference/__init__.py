"""lpd_engine.reference: the PyTorch golden models (LPD transformer, LlamaGen VQ) with the
official state-dict layouts, their configs, and the checkpoint loaders. Needs torch."""

from .checkpoint import build_lpd, build_vq, load_lpd_state_dict, load_vq_state_dict
from ..config import LPDConfig, VQConfig
from .transformer import LPDTransformer, training_mask
from .vq import VQModel, to_uint8

__all__ = [
    "LPDConfig", "VQConfig", "LPDTransformer", "VQModel", "to_uint8", "training_mask",
    "build_lpd", "build_vq", "load_lpd_state_dict", "load_vq_state_dict",
]
