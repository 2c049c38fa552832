"""TensorRT plans for a bundle, built from its ONNX graphs (TensorRT 10+ Python API).

Plans are specific to the GPU and TensorRT version that build them, so they are optional
(`build_engine.py --tensorrt`) and the manifest records both; the backend refuses a mismatch.
Shape profiles come from the bundle's schedules: rows per step range over what the group
sizes need (context rows of the previous group plus this group's queries), cached slots over
[0, N], sequences over [1, MAX_SEQUENCES]. A timing cache in the bundle makes rebuilds fast.
This path is untested where TensorRT is not installed (the project's CPU machines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lpd_engine import bundle as bundle_format
from lpd_engine.errors import BackendUnavailableError

MAX_SEQUENCES = 128  # 64 images with guidance
MAX_IMAGES = 64
PLAN_DIR = "tensorrt"
TIMING_CACHE = f"{PLAN_DIR}/timing.cache"


def require_tensorrt():
    """The tensorrt module, or BackendUnavailableError saying why not."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(f"TensorRT plans need the tensorrt Python package (TensorRT 10+): {e}") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendUnavailableError(f"TensorRT 10+ is needed, found {trt.__version__}")
    return trt


def step_profile(config, schedules: dict, bundle_dir: Path) -> dict:
    """{input: (min, opt, max) shape} of the step graph, and num_context's value range."""
    from lpd_engine import schedule

    rows, contexts, opt_rows = [], [], None
    for steps, entry in sorted(schedules.items(), key=lambda kv: int(kv[0])):
        g = schedule.load_schedule(bundle_dir / entry["file"]).group_sizes
        ctx = np.concatenate([[1], g[:-1]])  # context rows of step k: the class row, then group k-1
        rows.append(ctx + g)
        contexts.append(ctx)
        if opt_rows is None or int(steps) == 20:
            opt_rows = int((ctx + g).max())
    if not rows:  # no schedules: any group size up to N
        rows, contexts, opt_rows = [np.array([2, config.num_tokens + 1])], [np.array([1, config.num_tokens])], 2
    rows, contexts = np.concatenate(rows), np.concatenate(contexts)
    n, L, H, hd = config.num_tokens, config.depth, config.heads, config.head_dim
    r = (int(rows.min()), opt_rows, int(rows.max()))
    return {
        "embed_ids": [(1, r[0]), (2, r[1]), (MAX_SEQUENCES, r[2])],
        "pos_ids": [(1, r[0]), (2, r[1]), (MAX_SEQUENCES, r[2])],
        "past_k": [(L, 1, H, 0, hd), (L, 2, H, n // 2, hd), (L, MAX_SEQUENCES, H, n, hd)],
        "past_v": [(L, 1, H, 0, hd), (L, 2, H, n // 2, hd), (L, MAX_SEQUENCES, H, n, hd)],
        "num_context": [int(contexts.min()), int(np.median(contexts)), int(contexts.max())],
    }


def build_plans(bundle_dir: Path, config, schedules: dict) -> dict:
    """Build tensorrt/step.plan and tensorrt/vq_decoder.plan; returns the manifest's "tensorrt" entry."""
    trt = require_tensorrt()
    import torch

    (bundle_dir / PLAN_DIR).mkdir(exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_path = bundle_dir / TIMING_CACHE
    profiles = {"step": step_profile(config, schedules, bundle_dir),
                "vq_decoder": {"tokens": [(1, config.num_tokens), (1, config.num_tokens),
                                          (MAX_IMAGES, config.num_tokens)]}}
    plans = {}
    for graph, profile_shapes in profiles.items():
        onnx_path = bundle_dir / bundle_format.GRAPH_FILES[graph]
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
        build_config = builder.create_builder_config()
        cache = build_config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        build_config.set_timing_cache(cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes.items():
            if name == "num_context":  # a shape tensor: it sets the logits' row count
                profile.set_shape_input(name, [lo], [opt], [hi])
            else:
                profile.set_shape(name, lo, opt, hi)
        build_config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, build_config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build a plan for {onnx_path}")
        plan_file = f"{PLAN_DIR}/{graph}.plan"
        (bundle_dir / plan_file).write_bytes(bytes(serialized))
        cache_path.write_bytes(bytes(build_config.get_timing_cache().serialize()))
        plans[graph] = {"file": plan_file, "onnx_sha256": bundle_format.file_entry(onnx_path)["sha256"],
                        "profile": {k: [[int(x) for x in np.atleast_1d(s)] for s in v]
                                    for k, v in profile_shapes.items()}}
    return {"version": trt.__version__, "device": torch.cuda.get_device_name(), "plans": plans,
            "timing_cache": TIMING_CACHE}
