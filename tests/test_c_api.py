"""The C side of the native engine from pytest: engine.h is strict C99, and the example program
(engine/examples/generate_png.cpp, built by CMake into build/cpp by tests/run.sh) writes PNG
files that PIL opens, with the pixels the Python binding produces for the same request."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "build" / "cpp" / "engine" / "lpd_generate_png"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_engine_h_is_strict_c99(tmp_path):
    source = tmp_path / "uses_engine.c"
    source.write_text('#include "lpd/engine.h"\n'
                      "int main(void) {\n"
                      "  lpd_engine_params p = lpd_engine_default_params();\n"
                      "  lpd_request_params r = lpd_request_default_params();\n"
                      "  lpd_engine* e = NULL;\n"
                      "  (void)r;\n"
                      "  return lpd_engine_init(\"x\", &p, &e) == LPD_STATUS_OK ? 0 : 1;\n"
                      "}\n")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-pedantic", "-fsyntax-only",
                    f"-I{ROOT / 'engine' / 'include'}", str(source)], check=True)


@pytest.mark.skipif(not EXAMPLE.exists(), reason="build/cpp not built (tests/run.sh builds it)")
def test_example_writes_valid_png(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from PIL import Image

    sys.path.insert(0, str(ROOT / "export"))
    import build_engine
    from factories import make_lpd_state_dict, make_vq_state_dict, tiny_vq_config
    from lpd_engine.reference import LPDConfig

    config = LPDConfig(dim=64, depth=2, heads=4, vocab_size=29, num_classes=10, num_tokens=16, mlp_hidden=256)
    bundle = build_engine.build_bundle(make_lpd_state_dict(config, 1), make_vq_state_dict(tiny_vq_config(), 2),
                                       tmp_path / "bundle", onnx=False, progress=False, steps=[])
    result = subprocess.run([str(EXAMPLE), str(bundle), str(tmp_path / "img"), "3", "7", "--steps", "4",
                             "--cfg", "2.5", "--seed", "5"], capture_output=True, text=True, check=True)
    assert "img1.png" in result.stdout
    images = []
    for i in range(2):
        with Image.open(tmp_path / f"img{i}.png") as im:
            im.load()
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (8, 8)
            images.append(np.asarray(im))
    # Same request through the Python binding: the example's schedule is 1 then (N-1) spread evenly,
    # orders are locality orders 0..B-1 of the seed with repulsion 2.
    from lpd_engine import schedule
    from lpd_engine.backends.native import NativeEngine
    from lpd_engine.sampling import SamplingParams

    groups = [1, 5, 5, 5]
    orders = schedule.locality_orders(4, groups, 2, 5, repulsion=2.0, proximity=1.0)
    _, pixels = NativeEngine(bundle).generate([3, 7], groups, orders, SamplingParams(cfg=2.5, seed=5))
    np.testing.assert_array_equal(np.stack(images), pixels)
