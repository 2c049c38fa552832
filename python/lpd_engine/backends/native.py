"""The native backend: the C++ runtime (lpd_engine._C.Engine) over an engine bundle.

Unlike the torch / onnxruntime backends it does not plug into lpd_engine.driver: it has its
own generation loop in C++ (continuous batching over a paged KV cache, engine/src/runtime.cpp),
tested token for token against the driver. Inputs are validated by the C++ side and bad ones
raise the lpd_engine.errors classes.

    eng = NativeEngine("bundle/", kv_pool_bytes=256 << 20)
    tokens = eng.generate_tokens([207, 360], group_sizes, orders, SamplingParams(cfg=4.8, seed=0))
    pixels = eng.decode(tokens)                                    # uint8 [2, H, W, 3]

    rid = eng.submit(labels, group_sizes, orders, params)          # continuous batching
    rid2 = eng.submit_steps(labels, 20, SamplingParams(cfg=eng.default_cfg(20)))  # by steps, as Generator
    while eng.step():
        ...
    tokens, pixels = eng.take(rid)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, BundleError
from ..config import LPDConfig
from ..sampling import SamplingParams


def _load_extension():
    try:
        from .. import _C
    except ImportError as e:
        raise BackendUnavailableError(f"the native backend needs the compiled module lpd_engine._C ({e}); "
                                      "install with `pip install .`") from None
    if not hasattr(_C, "Engine"):
        raise BackendUnavailableError("lpd_engine._C was built without the runtime (Engine)")
    return _C


class NativeEngine:
    """One bundle on the C++ runtime (CPU float32, or the GPU in bf16).

    kv_pool_bytes / kv_pool_blocks: the KV pool (K and V of every layer; float32, bf16 on the
    GPU) in bytes or in blocks of block_size slots; both 0 gives room for 8 guided images (with
    device "cuda": 64 at 256 px, 16 at 512 px). A request needing more blocks than the whole
    pool is refused at submit (InvalidRequestError); one that needs more than are free waits in
    a FIFO queue. num_threads: CPU threads (0 = all).
    device: "cpu" (float32) or "cuda" (bf16 weights, activations and KV cache on the GPU,
    sampling on the device, CUDA graphs, the VQ decoder on the GPU too; needs a build with the
    CUDA path, see NativeEngine.cuda_available()).
    precision: "" (the device's own), "bf16" (cuda only) or "fp32": on cuda, the transformer in
    float32 (the CPU path's tokens; the VQ decoder stays bf16).
    """

    name = "native"

    def __init__(self, bundle_dir, kv_pool_bytes: int = 0, kv_pool_blocks: int = 0, block_size: int = 16,
                 num_threads: int = 0, verify_hashes: bool = True, device: str = "cpu", precision: str = ""):
        _C = _load_extension()
        bundle_dir = Path(bundle_dir)
        try:
            manifest = json.loads((bundle_dir / "manifest.json").read_text())
            self.config = LPDConfig.from_dict(manifest["config"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{bundle_dir}: cannot read the bundle manifest ({e})") from None
        self._engine = _C.Engine(str(bundle_dir), kv_pool_bytes=kv_pool_bytes, kv_pool_blocks=kv_pool_blocks,
                                 block_size=block_size, num_threads=num_threads, verify_hashes=verify_hashes,
                                 device=device, precision=precision)
        self.device = device
        self.precision = self._engine.precision
        self.image_size = self._engine.image_size

    @staticmethod
    def cuda_available() -> bool:
        """Whether the compiled extension has the CUDA path (a GPU may still be missing)."""
        return bool(_load_extension().Engine.cuda_available())

    # -- request API ------------------------------------------------------------------------

    def submit(self, labels, group_sizes, orders, params: SamplingParams, decode_pixels: bool = True,
               first_image: int = 0) -> int:
        """Queue one request of len(labels) images; returns its id.

        group_sizes [S] (sum N); orders [N] shared or [B, N] permutations of raster positions.
        Image i samples from the RNG stream (params.seed, first_image + i), as image
        first_image + i of the Python driver does: a batch split into several requests gives
        the images the whole batch gives.
        """
        return self._engine.submit(_ints(labels), _ints(group_sizes), _ints(orders).reshape(-1), float(params.cfg),
                                   params.cfg_schedule, float(params.temperature), int(params.top_k),
                                   float(params.top_p), int(params.seed), bool(decode_pixels), int(first_image))

    def submit_steps(self, labels, steps: int, params: SamplingParams, decode_pixels: bool = True) -> int:
        """Queue a request by step count; returns its id.

        Group sizes and orders are chosen in C++ exactly as Generator.run(labels, steps=steps,
        seed=params.seed) chooses them: the bundle's schedule for `steps`, image i taking its
        precomputed order pick(seed, i). InvalidScheduleError when the bundle has no schedule for
        `steps`. params.cfg is used as given; default_cfg(steps) is the bundle's default.
        """
        return self._engine.submit_steps(_ints(labels), int(steps), float(params.cfg), params.cfg_schedule,
                                         float(params.temperature), int(params.top_k), float(params.top_p),
                                         int(params.seed), bool(decode_pixels))

    def default_orders(self, group_sizes, batch: int, seed: int) -> np.ndarray:
        """Orders int64 [batch, N] for explicit group sizes, made in C++ as Generator._default_orders
        makes them (the bundle's precomputed orders when it holds these group sizes, else locality orders)."""
        return self._engine.default_orders(_ints(group_sizes), int(batch), int(seed))

    def default_cfg(self, steps: int) -> float:
        """The bundle manifest's guidance for `steps` steps, 1.0 where it publishes none."""
        return self._engine.default_cfg(int(steps))

    @property
    def schedule_steps(self) -> list[int]:
        """Step counts the bundle has precomputed schedules for (what submit_steps accepts)."""
        return list(self._engine.schedule_steps)

    def step(self) -> int:
        """Admit queued requests that fit, advance every running one by one of its steps; returns
        the number of requests still queued or running. Releases the GIL."""
        return self._engine.step()

    def poll(self, request_id: int) -> str:
        """'queued', 'running' or 'done' (KeyError for an unknown or taken id)."""
        return self._engine.state(request_id)

    def take(self, request_id: int):
        """(tokens int64 [B, N] raster order, pixels uint8 [B, H, W, 3] or None) of a finished request;
        the engine forgets it."""
        return self._engine.take(request_id)

    def release(self, request_id: int) -> None:
        """Forget a finished or still-queued request."""
        self._engine.release(request_id)

    def generate(self, labels, group_sizes, orders, params: SamplingParams, decode_pixels: bool = True):
        """submit + step until done + take: (tokens, pixels or None)."""
        return self._engine.generate(_ints(labels), _ints(group_sizes), _ints(orders).reshape(-1),
                                     float(params.cfg), params.cfg_schedule, float(params.temperature),
                                     int(params.top_k), float(params.top_p), int(params.seed), bool(decode_pixels))

    # -- what lpd_engine.Generator needs -----------------------------------------------------

    def generate_tokens(self, labels, group_sizes, orders, params: SamplingParams) -> np.ndarray:
        """Tokens int64 [B, N] in raster order, identical to lpd_engine.driver.generate_tokens."""
        return self.generate(labels, group_sizes, orders, params, decode_pixels=False)[0]

    def decode(self, tokens) -> np.ndarray:
        """VQ-decode raster tokens int64 [B, N] to RGB uint8 [B, H, W, 3]."""
        return self._engine.decode(_ints(tokens).reshape(-1, self.config.num_tokens))

    # -- KV pool ------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self._engine.num_blocks

    @property
    def free_blocks(self) -> int:
        return self._engine.free_blocks

    def blocks_for(self, batch: int, guided: bool) -> int:
        """KV blocks a request of `batch` images reserves while it runs."""
        return self._engine.blocks_for(batch, guided)


def _ints(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"expected integers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)
