"""Guidance and sampling: the one definition every backend reproduces.

Given the logits of one step (float32), a request's guidance and sampling parameters and the
shared RNG (lpd_engine.rng), this module decides the tokens. The C++/CUDA runtime implements
the same arithmetic, in the same order and precision, so backends can be compared token for
token. docs/rng.md states the definition in words:

1. Guidance (only when cfg != 1): w_t = 1 + (cfg - 1) * t / N (linear; t = 0-based generation
   index) or w_t = cfg (constant), computed in float64 and rounded to float32; then in float32
   `logits = u + w_t * (c - u)` (c conditional, u unconditional row), no fused multiply-add.
2. Greedy when temperature == 0 or top_k == 1: the first index of the maximum.
3. Otherwise in float32 `s = logits / max(temperature, 1e-5)`; top-k keeps s >= the k-th
   largest value (ties at the boundary are kept); top-p sorts the kept values descending (ties by
   index), e_i = exp(s_i - s_max) in float64, C_i their sequential prefix sums, and keeps entry i
   when i == 0 or C_{i-1} <= top_p * C_last.
4. token = first index of the maximum over kept v of float64(s_v) - log(-log(u(seed, image, t, v))).
   That is an exact draw from softmax(s) restricted to the kept set (Gumbel-max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import rng
from .errors import InvalidSamplingError

CFG_SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class SamplingParams:
    """Validated guidance and sampling settings of one request."""

    cfg: float = 1.0
    cfg_schedule: str = "linear"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        cfg, temperature, top_p = self.cfg, self.temperature, self.top_p
        if not _is_real(cfg) or not math.isfinite(cfg) or cfg < 0:
            raise InvalidSamplingError(f"cfg must be a finite number >= 0, got {cfg!r}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise InvalidSamplingError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}")
        if not _is_real(temperature) or not math.isfinite(temperature) or temperature < 0:
            raise InvalidSamplingError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise InvalidSamplingError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not _is_real(top_p) or not (0.0 < top_p <= 1.0):
            raise InvalidSamplingError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**64:
            raise InvalidSamplingError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")

    @property
    def guided(self) -> bool:
        """True when the request runs an unconditional sequence beside the conditional one."""
        return self.cfg != 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def guidance_weights(params: SamplingParams, gen_indices: np.ndarray, num_tokens: int) -> np.ndarray:
    """w_t for each generation index t; float32 [len(gen_indices)]."""
    t = np.asarray(gen_indices, dtype=np.float64)
    if params.cfg_schedule == "linear":
        w = 1.0 + (params.cfg - 1.0) * t / num_tokens
    else:
        w = np.full_like(t, params.cfg)
    return w.astype(np.float32)


def apply_guidance(cond: np.ndarray, uncond: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """u + w * (c - u) in float32. cond, uncond: [B, G, V]; weights: [G]."""
    cond = np.asarray(cond, dtype=np.float32)
    uncond = np.asarray(uncond, dtype=np.float32)
    return uncond + weights[None, :, None] * (cond - uncond)


def sample(logits: np.ndarray, params: SamplingParams, image_indices, gen_indices) -> np.ndarray:
    """Tokens for guided logits [B, G, V] (float32): int64 [B, G].

    image_indices [B]: each row's image index within its request; gen_indices [G]: the
    generation index t of each query column.
    """
    logits = np.asarray(logits, dtype=np.float32)
    batch, groups, vocab = logits.shape
    if params.greedy:
        return logits.argmax(axis=-1).astype(np.int64)
    scaled = logits / np.float32(max(params.temperature, 1e-5))
    keep = _kept(scaled, params.top_k, params.top_p)
    gen = np.asarray(gen_indices, dtype=np.int64)
    out = np.empty((batch, groups), dtype=np.int64)
    for b, image in enumerate(image_indices):
        u = rng.sampling_uniforms(params.seed, int(image), gen, vocab)  # [G, V]
        score = scaled[b].astype(np.float64) - np.log(-np.log(u))
        out[b] = np.where(keep[b], score, -np.inf).argmax(axis=-1)
    return out


def _kept(scaled: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Boolean mask [B, G, V] of the vocabulary entries that survive top-k and top-p."""
    keep = np.ones(scaled.shape, dtype=bool)
    vocab = scaled.shape[-1]
    if 0 < top_k < vocab:
        kth = -np.partition(-scaled, top_k - 1, axis=-1)[..., top_k - 1 : top_k]
        keep &= scaled >= kth
    if top_p < 1.0:
        flat_s, flat_keep = scaled.reshape(-1, vocab), keep.reshape(-1, vocab)
        for s, k in zip(flat_s, flat_keep):
            idx = np.flatnonzero(k)
            order = idx[np.argsort(-s[idx], kind="stable")]
            e = np.exp(s[order].astype(np.float64) - np.float64(s[order[0]]))
            prefix = np.cumsum(e)
            survive = np.ones(len(order), dtype=bool)
            survive[1:] = prefix[:-1] <= top_p * prefix[-1]
            k[:] = False
            k[order[survive]] = True
    return keep
