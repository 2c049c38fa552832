"""The tensorrt backend: a bundle's TensorRT plans (export/tensorrt_plans.py) under lpd_engine.driver.

Device memory is held in torch CUDA tensors (the KV cache [L, S, H, N + 1, head_dim] per run,
inputs and outputs per step), and the plans run with execute_async_v3 on torch's current stream.
num_context is a shape tensor of the step plan (it sets the logits' row count), so it is passed
in host memory. tensorrt and torch are imported when the backend is made; a missing package, no
GPU, or plans built by another TensorRT version are refused with a typed error.
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailableError, BundleError, InvalidRequestError


def _require():
    try:
        import tensorrt as trt
        import torch
    except ImportError as e:
        raise BackendUnavailableError(f"the tensorrt backend needs the tensorrt (10+) and torch packages: {e}") from None
    if not torch.cuda.is_available():
        raise BackendUnavailableError("the tensorrt backend needs a CUDA GPU, and torch sees none")
    return trt, torch


class _Cache:
    def __init__(self, k, v):
        self.k, self.v, self.length = k, v, 0


class _Plan:
    """One deserialized plan and its execution context; `run` binds tensors by name."""

    def __init__(self, trt, torch, bundle, graph: str, runtime):
        entry = bundle.manifest["tensorrt"]["plans"].get(graph)
        if entry is None:
            raise BundleError(f"{bundle.path}: the manifest lists no TensorRT plan for {graph!r}")
        onnx_file = bundle.manifest["graphs"][graph]["file"]
        if entry["onnx_sha256"] != bundle.manifest["files"][onnx_file]["sha256"]:
            raise BundleError(f"{bundle.path / entry['file']}: built from another {onnx_file}; rebuild the plans")
        self.engine = runtime.deserialize_cuda_engine(bundle.file(entry["file"]).read_bytes())
        if self.engine is None:
            raise BundleError(f"{bundle.path / entry['file']}: TensorRT {trt.__version__} cannot load this plan")
        self.context = self.engine.create_execution_context()
        self.profile = entry["profile"]
        self.trt, self.torch = trt, torch

    def run(self, device_inputs: dict, host_inputs: dict) -> dict:
        torch, ctx = self.torch, self.context
        for name, t in device_inputs.items():
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        for name, arr in host_inputs.items():
            ctx.set_tensor_address(name, arr.ctypes.data)
        outputs = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.OUTPUT:
                dtype = torch.from_numpy(np.empty(0, self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
                outputs[name] = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device="cuda")
                ctx.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return outputs


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, bundle):
        trt, torch = _require()
        entry = bundle.manifest.get("tensorrt")
        if entry is None:
            raise BundleError(f"{bundle.path}: this bundle has no TensorRT plans; build it with --tensorrt")
        if entry["version"] != trt.__version__:
            raise BundleError(f"{bundle.path}: plans built with TensorRT {entry['version']}, this is "
                              f"{trt.__version__}; rebuild them")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.config, self.torch = bundle.config, torch
        self._step = _Plan(trt, torch, bundle, "step", runtime)
        self._decode = _Plan(trt, torch, bundle, "vq_decoder", runtime)

    def start(self, num_sequences: int) -> _Cache:
        limit = self._step.profile["embed_ids"][2][0]
        if num_sequences > limit:
            raise InvalidRequestError(f"the TensorRT step plan takes at most {limit} sequences, got {num_sequences}")
        cfg = self.config
        shape = (cfg.depth, num_sequences, cfg.heads, cfg.num_tokens + 1, cfg.head_dim)
        return _Cache(self.torch.zeros(shape, device="cuda"), self.torch.zeros(shape, device="cuda"))

    def step(self, cache: _Cache, embed_ids: np.ndarray, pos_ids: np.ndarray, num_context: int) -> np.ndarray:
        torch, p = self.torch, cache.length
        out = self._step.run(
            {"embed_ids": torch.from_numpy(np.ascontiguousarray(embed_ids, np.int64)).cuda(),
             "pos_ids": torch.from_numpy(np.ascontiguousarray(pos_ids, np.int64)).cuda(),
             "past_k": cache.k[:, :, :, :p].contiguous(), "past_v": cache.v[:, :, :, :p].contiguous()},
            {"num_context": np.array(num_context, dtype=np.int64)})
        cache.k[:, :, :, p : p + num_context] = out["k_new"][:, :, :, :num_context]
        cache.v[:, :, :, p : p + num_context] = out["v_new"][:, :, :, :num_context]
        cache.length = p + num_context
        return out["logits"].cpu().numpy()

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        limit = self._decode.profile["tokens"][2][0]
        pixels = [self._decode.run({"tokens": self.torch.from_numpy(np.ascontiguousarray(chunk, np.int64)).cuda()},
                                   {})["pixels"].cpu().numpy()
                  for chunk in np.array_split(tokens, -(-len(tokens) // limit))]
        return np.concatenate(pixels)
