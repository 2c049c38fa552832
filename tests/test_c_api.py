"""The C side of the native engine from pytest: engine.h is strict C99. The example program
(engine/examples/generate_png.cpp) is tested in test_native_steps.py: it requests by step count,
so it runs on the demo bundle's schedules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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

