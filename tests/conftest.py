"""Shared test settings: tolerances are defined here once (see ../shared/design/ARCHITECTURE.md,
numerics contract) and small model configs the tests build their own random weights for."""

# CPU float32 paths against the float32 reference: relative L2 error of logits.
FP32_LOGITS_RTOL = 1e-5
# Decoded images of two float32 backends: max absolute difference in uint8 levels.
IMAGE_MAX_DIFF = 1
