"""Backends: each supplies a KV cache, a step function and a VQ decoder to lpd_engine.driver.

torch (the golden reference), onnxruntime and tensorrt run through the one Python driver; the
native backend (lpd_engine._C) has its own loop in C++ and is tested against the others.
"""
