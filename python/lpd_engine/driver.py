"""The Python generation loop, written once for every Python backend (torch, onnxruntime,
tensorrt). A backend supplies only a KV cache and a step function; this module does the rest
of lpd-facts.md §2: slots, unified-embedding row ids, guidance rows, sampling, un-permuting.

Per step k of group sizes g (c[0] = 0, c[1] = 1, c[k+2] = 1 + g[0] + ... + g[k]):
    context rows: slots c[k] .. c[k+1]-1 (the class / unconditional row at k = 0, else the
                  tokens sampled at step k-1), query rows: slots c[k+1] .. c[k+2]-1 (mask rows).
    Sequence b < B is image b's conditional sequence; B + b its unconditional one (guidance).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from . import sampling


class Backend(Protocol):
    """What the driver needs of a backend. Shapes: S sequences, R rows, G = R - num_context."""

    name: str

    def start(self, num_sequences: int):
        """A fresh KV cache for num_sequences sequences of num_tokens + 1 slots each."""

    def step(self, cache, embed_ids: np.ndarray, pos_ids: np.ndarray, num_context: int) -> np.ndarray:
        """One step: rows [S, R] of unified-table ids and pos_embed ids; the first num_context
        rows are context rows. Appends the context rows' K/V to `cache`; returns the query rows'
        logits, float32 [S, G, V]."""

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """VQ-decode raster-order tokens int64 [B, N] to RGB uint8 [B, H, W, 3]."""


def slot_bounds(group_sizes: np.ndarray) -> np.ndarray:
    """c[0..S+1]: c[0] = 0, c[1] = 1, c[k+2] = 1 + sum(g[:k+1])."""
    return np.concatenate([[0, 1], 1 + np.cumsum(group_sizes)]).astype(np.int64)


def generate_tokens(backend: Backend, config, labels: np.ndarray, group_sizes: np.ndarray,
                    orders: np.ndarray, params: sampling.SamplingParams, progress=None) -> np.ndarray:
    """Generate tokens for validated inputs; returns int64 [B, N] in raster order.

    labels [B] class ids; group_sizes [S]; orders [B, N] permutations; progress: an optional
    callable invoked once per finished step (a progress bar's update).
    """
    batch, num_tokens = orders.shape
    c = slot_bounds(group_sizes)
    guided = params.guided
    seqs = 2 * batch if guided else batch
    # pos_embed row of each slot, per sequence: slot 0 -> 0, slot 1 + t -> 1 + order[t].
    pos_of_slot = np.concatenate([np.zeros((batch, 1), np.int64), 1 + orders], axis=1)
    if guided:
        pos_of_slot = np.concatenate([pos_of_slot, pos_of_slot])
    cond_rows = np.array([config.class_index(int(y)) for y in labels], dtype=np.int64)
    if guided:
        cond_rows = np.concatenate([cond_rows, np.full(batch, config.uncond_index, np.int64)])
    generated = np.zeros((batch, num_tokens), dtype=np.int64)  # in generation order
    image_indices = np.arange(batch)

    cache = backend.start(seqs)
    for k, g in enumerate(group_sizes):
        if k == 0:
            context = cond_rows[:, None]
        else:
            context = generated[:, c[k] - 1 : c[k + 1] - 1]
            if guided:
                context = np.concatenate([context, context])
        num_context = context.shape[1]
        embed_ids = np.concatenate([context, np.full((seqs, g), config.mask_index, np.int64)], axis=1)
        pos_ids = pos_of_slot[:, c[k] : c[k + 2]]
        logits = backend.step(cache, embed_ids, pos_ids, num_context)
        gen_indices = np.arange(c[k + 1] - 1, c[k + 2] - 1)
        if guided:
            weights = sampling.guidance_weights(params, gen_indices, num_tokens)
            logits = sampling.apply_guidance(logits[:batch], logits[batch:], weights)
        generated[:, gen_indices] = sampling.sample(logits, params, image_indices, gen_indices)
        if progress is not None:
            progress()

    raster = np.empty_like(generated)
    np.put_along_axis(raster, orders, generated, axis=1)
    return raster
