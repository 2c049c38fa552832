"""`lpd_engine.Generator`: the Python front end.

    gen = Generator("bundles/lpd_l_256")                # or Generator() for the MNIST demo
    result = gen.run([207, 360], steps=20, seed=0)     # cfg: the bundle's default, 4.8
    result.images[0].save("dog.png")

`run` validates everything first (labels, sampling, schedule) and raises a typed error from
lpd_engine.errors before any compute; then it walks the schedule through a backend and decodes.
Image i of a run depends only on (model, labels[i], settings, seed, i): its order is the
bundle's precomputed order pick(seed, i) (or locality order i of `seed` made on the spot), its
sampling noise the RNG stream (seed, i). The torch, onnxruntime and tensorrt backends run the
Python loop of lpd_engine.driver; the native backend runs the C++ one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import driver, schedule
from .defaults import DEFAULT_STEPS
from .errors import InvalidLabelError, InvalidScheduleError
from .sampling import SamplingParams


@dataclass
class GenerationResult:
    """What `Generator.run` returns.

    tokens: int64 [B, N] in raster order; orders: int64 [B, N]; group_sizes: int64 [S];
    pixels: uint8 [B, H, W, 3]; images: the same as PIL images; timings: seconds per stage.
    """

    tokens: np.ndarray
    orders: np.ndarray
    group_sizes: np.ndarray
    pixels: np.ndarray
    params: SamplingParams
    timings: dict

    @property
    def images(self) -> list[Image.Image]:
        return [Image.fromarray(p) for p in self.pixels]


class Generator:
    """Generates class-conditional images with one LPD model through one backend."""

    def __init__(self, bundle=None, backend: str = "auto", device: str = "cpu", precision: str | None = None):
        """Open an engine bundle directory (default: the embedded demo bundle).

        backend: "native" (the C++ runtime), "onnxruntime", "tensorrt", "torch", or "auto":
        native when the compiled runtime is present, else onnxruntime, else torch.
        device: "cpu", or "cuda" for the native runtime on the GPU (bf16; tokens and pixels on
        the device); "cuda" needs backend "native" or "auto" and a build with the CUDA path.
        precision: None (the device's own), or "fp32" (on "cuda": the transformer in float32,
        which gives the CPU path's tokens) or "bf16" ("cuda" only).
        """
        from .bundle import DEMO_BUNDLE, open_bundle

        if device not in ("cpu", "cuda"):
            raise ValueError(f'device must be "cpu" or "cuda", got {device!r}')
        if device == "cuda" and backend not in ("native", "auto"):
            raise ValueError(f'device "cuda" runs on the native backend, not {backend!r}')
        if precision not in (None, "fp32") and not (precision == "bf16" and device == "cuda"):
            raise ValueError(f'precision must be None, "fp32" or (device "cuda") "bf16", got {precision!r}')
        self.bundle = open_bundle(DEMO_BUNDLE if bundle is None else bundle)
        self.config = self.bundle.config
        self.image_size = self.bundle.image_size
        self.default_cfg = dict(self.bundle.default_cfg)
        self.backend = _make_backend(self.bundle, "native" if device == "cuda" else backend, device, precision or "")

    @classmethod
    def _assemble(cls, backend, config, image_size: int, default_cfg: dict[int, float]) -> "Generator":
        gen = cls.__new__(cls)
        gen.backend, gen.config, gen.image_size, gen.default_cfg = backend, config, image_size, dict(default_cfg)
        gen.bundle = None
        return gen

    @classmethod
    def from_checkpoints(cls, lpd_checkpoint, vq_checkpoint, backend: str = "torch", heads: int | None = None):
        """Build from an official LPD checkpoint (path, {"model": sd} or sd) and a LlamaGen VQ one."""
        if backend not in ("torch", "auto"):
            raise ValueError(f"from_checkpoints runs on the torch reference; build a bundle for {backend!r}")
        from .backends.torch_backend import TorchBackend
        from .defaults import preset_name, published_cfg_for
        from .reference import build_lpd, build_vq, load_lpd_state_dict, load_vq_state_dict

        model = build_lpd(load_lpd_state_dict(lpd_checkpoint), heads=heads)
        vq = build_vq(load_vq_state_dict(vq_checkpoint))
        image_size = model.config.grid * vq.config.downsample
        name = preset_name(model.config)
        return cls._assemble(TorchBackend(model, vq), model.config, image_size,
                             published_cfg_for(name, image_size) if name else {})

    def run(self, labels, steps: int | None = None, cfg: float | None = None, cfg_schedule: str = "linear",
            temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
            group_sizes=None, orders=None, progress: bool | None = None) -> GenerationResult:
        """Generate one image per label.

        steps: a published step count for the model's token grid (default 20), or leave it out
        and pass group_sizes. cfg: guidance scale; None takes the published value for
        (model, image size, steps) and 1.0 (no guidance) where none is published.
        group_sizes: explicit group sizes (sum N). orders: one order [N] for all images or one
        per image [B, N] (permutations of raster positions); default: locality-aware orders.
        progress: a progress bar over steps; None shows it when stderr is a terminal.
        """
        labels = self._check_labels(labels)
        group_sizes, steps = self._resolve_group_sizes(steps, group_sizes)
        if cfg is None:
            cfg = self.default_cfg.get(steps, 1.0)
        params = SamplingParams(cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed)
        t0 = time.perf_counter()
        if orders is None:
            orders = self._default_orders(group_sizes, len(labels), params.seed)
        else:
            orders = schedule.validate_orders(orders, self.config.num_tokens, len(labels))
        t1 = time.perf_counter()

        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=len(group_sizes), desc="steps", disable=not show, leave=False) as bar:
            if hasattr(self.backend, "submit"):  # the native runtime runs its own loop
                tokens = self._run_native(labels, group_sizes, orders, params, bar)
            else:
                tokens = driver.generate_tokens(self.backend, self.config, labels, group_sizes, orders,
                                                params, progress=bar.update)
        t2 = time.perf_counter()
        pixels = self.backend.decode(tokens)
        t3 = time.perf_counter()
        return GenerationResult(tokens=tokens, orders=orders, group_sizes=group_sizes, pixels=pixels,
                                params=params,
                                timings={"schedule_s": t1 - t0, "tokens_s": t2 - t1, "decode_s": t3 - t2,
                                         "total_s": t3 - t0})

    def _run_native(self, labels, group_sizes, orders, params, bar) -> np.ndarray:
        """The batch as requests that each fit the native KV pool (each keeps its images' RNG
        indices), queued at once and run by continuous batching; tokens int64 [B, N]."""
        engine = self.backend
        per_request = max(1, engine.num_blocks // engine.blocks_for(1, params.guided))
        starts = range(0, len(labels), per_request)
        ids = [engine.submit(labels[i : i + per_request], group_sizes, orders[i : i + per_request], params,
                             decode_pixels=False, first_image=i) for i in starts]
        bar.total = len(group_sizes) * len(ids)
        while engine.step():  # returns how many requests are still queued or running
            bar.update()
        return np.concatenate([engine.take(request)[0] for request in ids])

    def _default_orders(self, group_sizes: np.ndarray, batch: int, seed: int) -> np.ndarray:
        """Image i's order: a bundle's precomputed order number pick(seed, i) when the bundle
        holds these group sizes, else locality order i of `seed` made on the spot."""
        precomputed = self.bundle.schedule(len(group_sizes)) if self.bundle is not None else None
        if precomputed is not None and np.array_equal(precomputed.group_sizes, group_sizes):
            return precomputed.orders[schedule.order_picks(seed, batch, len(precomputed.orders))]
        return schedule.locality_orders(self.config.grid, group_sizes, batch, seed)

    def _check_labels(self, labels) -> np.ndarray:
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidLabelError(f"labels must be a non-empty 1-D sequence of class ids, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InvalidLabelError(f"labels must be integers, got {arr.dtype}")
        bad = arr[(arr < 0) | (arr >= self.config.num_classes)]
        if bad.size:
            raise InvalidLabelError(
                f"labels must be in [0, {self.config.num_classes}); got {bad.tolist()[:5]}")
        return arr.astype(np.int64)

    def _resolve_group_sizes(self, steps, group_sizes) -> tuple[np.ndarray, int]:
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise InvalidScheduleError(f"steps must be a positive integer, got {steps!r}")
        if group_sizes is None:
            steps = DEFAULT_STEPS if steps is None else int(steps)
            return np.asarray(schedule.published_group_sizes(self.config.grid, steps), np.int64), steps
        group_sizes = schedule.validate_group_sizes(group_sizes, self.config.num_tokens)
        if steps is not None and steps != len(group_sizes):
            raise InvalidScheduleError(f"steps={steps} but group_sizes has {len(group_sizes)} entries")
        return group_sizes, len(group_sizes)


def _make_backend(bundle, name: str, device: str = "cpu", precision: str = ""):
    from .errors import BackendUnavailableError

    if name == "auto":
        for candidate in ("native", "onnxruntime", "torch"):
            try:
                return _make_backend(bundle, candidate)
            except BackendUnavailableError:
                continue
        raise BackendUnavailableError("no backend can run here: install onnxruntime or torch, or build lpd_engine._C")
    if name == "native":
        from .backends.native import NativeEngine

        if device == "cuda" and not NativeEngine.cuda_available():
            raise BackendUnavailableError('device "cuda": lpd_engine._C was built without the CUDA path')
        return NativeEngine(bundle.path, device=device, precision=precision)
    return bundle.make_backend(name)
