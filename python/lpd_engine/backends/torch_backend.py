"""The torch backend: lpd_engine.reference run in float32 on the CPU (or any torch device).

It is the golden model every other backend is compared with, so it is plain: a contiguous KV
cache [L, S, H, N + 1, head_dim] per run, one `LPDTransformer.step` per step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..reference import LPDTransformer, VQModel, to_uint8


class _Cache:
    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v, self.length = k, v, 0


class TorchBackend:
    name = "torch"

    def __init__(self, model: LPDTransformer, vq: VQModel, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.vq = vq.to(device).eval()
        self.device = device
        self.config = model.config

    def start(self, num_sequences: int) -> _Cache:
        cfg = self.config
        shape = (cfg.depth, num_sequences, cfg.heads, cfg.num_tokens + 1, cfg.head_dim)
        dtype = next(self.model.parameters()).dtype
        return _Cache(torch.zeros(shape, dtype=dtype, device=self.device),
                      torch.zeros(shape, dtype=dtype, device=self.device))

    @torch.inference_mode()
    def step(self, cache: _Cache, embed_ids: np.ndarray, pos_ids: np.ndarray, num_context: int) -> np.ndarray:
        p = cache.length
        logits, k_new, v_new = self.model.step(
            torch.from_numpy(embed_ids).to(self.device), torch.from_numpy(pos_ids).to(self.device),
            cache.k[:, :, :, :p], cache.v[:, :, :, :p], num_context)
        cache.k[:, :, :, p : p + num_context] = k_new[:, :, :, :num_context]
        cache.v[:, :, :, p : p + num_context] = v_new[:, :, :, :num_context]
        cache.length = p + num_context
        return logits.float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        images = self.vq.decode_codes(torch.from_numpy(tokens).to(self.device))
        return to_uint8(images.float().cpu())
