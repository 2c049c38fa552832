"""Shared test settings: tolerances are defined here once (see ../shared/design/ARCHITECTURE.md,
numerics contract) and small model configs the tests build their own random weights for."""

# CPU float32 paths against the float32 reference: relative L2 error of logits.
FP32_LOGITS_RTOL = 1e-5
# Decoded images of two float32 backends: max absolute difference in uint8 levels.
IMAGE_MAX_DIFF = 1

# GPU (bf16) path, tests/test_cuda.py: logits against the bf16 torch reference (relative L2),
# greedy tokens equal to the CPU path's (fraction), and kernel errors against float64 at most
# this many times the same-precision torch computation's error.
GPU_LOGITS_RTOL = 1e-2
GPU_TOKEN_AGREEMENT = 0.99
GPU_ERROR_RATIO = 2.0


def require_native():
    """lpd_engine.backends.native, skipping the calling test module when lpd_engine._C was built
    without the runtime (call it at module level)."""
    import pytest

    from lpd_engine import errors

    native = pytest.importorskip("lpd_engine.backends.native")
    try:
        native._load_extension()
    except errors.BackendUnavailableError as e:
        pytest.skip(str(e), allow_module_level=True)
    return native
