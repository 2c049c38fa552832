"""The onnxruntime backend: a bundle's step.onnx and vq_decoder.onnx under lpd_engine.driver.

The KV cache is a numpy array per run, [L, S, H, N + 1, head_dim] for K and for V, owned by
this object's caller through `start`; each step passes the filled prefix as past_k/past_v and
writes the context rows' new K/V after it. The provider is the CPU one, or CUDA when the
installed onnxruntime offers it, with TF32 off (the graphs promise float32 arithmetic; with
TF32 on, measured on an H200, logits drift by 5e-4 relative and sampled tokens differ from the
reference). A session that did not get the provider it asked for is refused (onnxruntime would
otherwise fall back to the CPU silently).
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailableError


class _Cache:
    def __init__(self, k: np.ndarray, v: np.ndarray):
        self.k, self.v, self.length = k, v, 0


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(f"the onnxruntime backend needs the onnxruntime package: {e}") from None
        self.config = bundle.config
        wanted = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() \
            else "CPUExecutionProvider"
        self.provider = wanted
        self._step = self._session(ort, bundle, "step", wanted)
        self._decode = self._session(ort, bundle, "vq_decoder", wanted)

    @staticmethod
    def _session(ort, bundle, graph: str, provider: str):
        path = bundle.graph_path(graph)
        providers = [provider] if provider == "CPUExecutionProvider" else [(provider, {"use_tf32": 0}),
                                                                            "CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), providers=providers)
        got = session.get_providers()
        if not got or got[0] != provider:
            raise BackendUnavailableError(f"onnxruntime gave {path.name} the providers {got}, not {provider}; "
                                          "refusing to fall back")
        bundle.check_graph(graph, session.get_modelmeta().custom_metadata_map)
        return session

    def start(self, num_sequences: int) -> _Cache:
        cfg = self.config
        shape = (cfg.depth, num_sequences, cfg.heads, cfg.num_tokens + 1, cfg.head_dim)
        return _Cache(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def step(self, cache: _Cache, embed_ids: np.ndarray, pos_ids: np.ndarray, num_context: int) -> np.ndarray:
        p = cache.length
        logits, k_new, v_new = self._step.run(None, {
            "embed_ids": np.ascontiguousarray(embed_ids, dtype=np.int64),
            "pos_ids": np.ascontiguousarray(pos_ids, dtype=np.int64),
            "past_k": np.ascontiguousarray(cache.k[:, :, :, :p]),
            "past_v": np.ascontiguousarray(cache.v[:, :, :, :p]),
            "num_context": np.array(num_context, dtype=np.int64),
        })
        cache.k[:, :, :, p : p + num_context] = k_new[:, :, :, :num_context]
        cache.v[:, :, :, p : p + num_context] = v_new[:, :, :, :num_context]
        cache.length = p + num_context
        return logits

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        (pixels,) = self._decode.run(None, {"tokens": np.ascontiguousarray(tokens, dtype=np.int64)})
        return pixels
