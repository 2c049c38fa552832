"""Requests by step count on the native C++ runtime against the Python Generator (issue 4).

On the demo bundle: NativeEngine.submit_steps, where C++ picks the group sizes and orders
(the bundle's schedules/steps{S}.npz, image i's order picked by (seed, i)), must give exactly
the tokens of Generator(backend="native").run(labels, steps=S, seed=...) and of
Generator(backend="torch"), with the bundle's default guidance and with explicit guidance;
NativeEngine.default_orders for explicit group sizes must equal Generator._default_orders;
the bundle's default_cfg must come from the manifest; missing step counts and damaged schedule
files must raise typed errors; and the C example (engine/examples/generate_png.cpp, built by
CMake into build/cpp) must write the PNG pixels Python produces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import IMAGE_MAX_DIFF, require_native  # noqa: E402
from lpd_engine import errors, schedule  # noqa: E402
from lpd_engine.bundle import DEMO_BUNDLE  # noqa: E402
from lpd_engine.generator import Generator  # noqa: E402
from lpd_engine.sampling import SamplingParams  # noqa: E402

native = require_native()

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "build" / "cpp" / "engine" / "lpd_generate_png"
LABELS = [1, 7, 3]
SEED = 5


@pytest.fixture(scope="module")
def native_gen():
    return Generator(backend="native")


@pytest.fixture(scope="module")
def torch_gen():
    return Generator(backend="torch")


@pytest.fixture(scope="module")
def engine(native_gen):
    return native_gen.backend


@pytest.fixture(scope="module")
def cfg_bundle(tmp_path_factory):
    """The demo bundle (files linked) with default_cfg {"8": 3.0} in its manifest."""
    out = tmp_path_factory.mktemp("cfg") / "bundle"
    shutil.copytree(DEMO_BUNDLE, out, copy_function=os.symlink)
    manifest = json.loads((DEMO_BUNDLE / "manifest.json").read_text())
    manifest["default_cfg"] = {"8": 3.0}
    (out / "manifest.json").unlink()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _run_steps(eng, labels, steps, params):
    rid = eng.submit_steps(labels, steps, params)
    while eng.step():
        pass
    return eng.take(rid)


@pytest.mark.parametrize("steps, cfg, extra", [
    (8, None, {}),
    (8, 2.0, {"temperature": 0.9, "top_k": 50}),
    (20, None, {}),
    (20, 2.5, {"cfg_schedule": "constant", "top_p": 0.8}),
], ids=["8-default", "8-cfg2-topk", "20-default", "20-cfg2.5-topp"])
def test_steps_match_generators(native_gen, torch_gen, engine, steps, cfg, extra):
    assert steps in engine.schedule_steps
    assert engine.default_cfg(steps) == native_gen.default_cfg[steps] == 3.0  # the demo bundle's manifest
    params = SamplingParams(cfg=engine.default_cfg(steps) if cfg is None else cfg, seed=SEED, **extra)
    tokens, pixels = _run_steps(engine, LABELS, steps, params)

    ref = native_gen.run(LABELS, steps=steps, cfg=cfg, seed=SEED, progress=False, **extra)
    np.testing.assert_array_equal(tokens, ref.tokens)
    np.testing.assert_array_equal(pixels, ref.pixels)
    # The orders C++ picked are the bundle's, by (seed, i), as Python picks them.
    np.testing.assert_array_equal(engine.default_orders(ref.group_sizes, len(LABELS), SEED), ref.orders)
    picks = schedule.order_picks(SEED, len(LABELS), 1000)
    np.testing.assert_array_equal(ref.orders, native_gen.bundle.schedule(steps).orders[picks])

    ref_torch = torch_gen.run(LABELS, steps=steps, cfg=cfg, seed=SEED, progress=False, **extra)
    np.testing.assert_array_equal(tokens, ref_torch.tokens)
    assert np.abs(pixels.astype(int) - ref_torch.pixels.astype(int)).max() <= IMAGE_MAX_DIFF


def test_default_cfg_comes_from_the_manifest(cfg_bundle):
    eng = native.NativeEngine(cfg_bundle)
    assert eng.default_cfg(8) == 3.0 and eng.default_cfg(20) == 1.0
    gen = Generator(cfg_bundle, backend="native")
    ref = gen.run(LABELS, steps=8, seed=SEED, progress=False)  # cfg left out: the manifest's 3.0
    assert ref.params.cfg == 3.0
    tokens, _ = _run_steps(eng, LABELS, 8, SamplingParams(cfg=eng.default_cfg(8), seed=SEED))
    np.testing.assert_array_equal(tokens, ref.tokens)
    unguided, _ = _run_steps(eng, LABELS, 8, SamplingParams(cfg=1.0, seed=SEED))
    assert (unguided != tokens).any()


def _other_sizes(sizes):
    sizes = list(sizes)
    sizes[3], sizes[4] = sizes[4], sizes[3]
    return sizes


@pytest.mark.parametrize("case", ["bundle's sizes", "other sizes, same steps", "steps the bundle lacks"])
def test_explicit_group_sizes_default_orders(native_gen, torch_gen, engine, case):
    published = native_gen.bundle.schedule(12).group_sizes
    group_sizes = {"bundle's sizes": published,
                   "other sizes, same steps": _other_sizes(published),
                   "steps the bundle lacks": [1, 2, 5, 10, 20, 30, 40, 48, 50, 50]}[case]
    orders = engine.default_orders(group_sizes, len(LABELS), SEED)
    np.testing.assert_array_equal(orders, native_gen._default_orders(np.asarray(group_sizes), len(LABELS), SEED))
    if case == "bundle's sizes":
        np.testing.assert_array_equal(orders, engine.default_orders(published, len(LABELS), SEED))
    params = SamplingParams(cfg=engine.default_cfg(len(group_sizes)), seed=SEED)
    tokens, _ = engine.generate(LABELS, group_sizes, orders, params, decode_pixels=False)
    ref = torch_gen.run(LABELS, group_sizes=group_sizes, seed=SEED, progress=False)
    np.testing.assert_array_equal(tokens, ref.tokens)


def test_typed_errors(engine, tmp_path):
    with pytest.raises(errors.InvalidScheduleError,
                       match="no schedule for 10 steps; available step counts: 8, 12, 16, 20, 24, 32, 64, 128, 256"):
        engine.submit_steps(LABELS, 10, SamplingParams())
    with pytest.raises(errors.InvalidScheduleError, match="steps must be >= 1"):
        engine.submit_steps(LABELS, 0, SamplingParams())
    with pytest.raises(errors.InvalidLabelError):
        engine.submit_steps([99], 8, SamplingParams())
    with pytest.raises(errors.InvalidScheduleError, match="sum to"):
        engine.default_orders([1, 2, 3], 1, 0)
    # A schedule file damaged after the bundle was built, opened without hash checks: the
    # request that needs it fails, naming the file; other step counts still work.
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle, copy_function=os.symlink)
    damaged = bundle / "schedules" / "steps8.npz"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 1
    damaged.unlink()
    damaged.write_bytes(bytes(data))
    eng = native.NativeEngine(bundle, verify_hashes=False)
    with pytest.raises(errors.BundleError, match=r"steps8\.npz entry 'orders\.npy': CRC-32 mismatch"):
        eng.submit_steps(LABELS, 8, SamplingParams())
    eng.release(eng.submit_steps(LABELS, 12, SamplingParams()))


def _example(tmp_path, bundle, labels, *args):
    from PIL import Image

    result = subprocess.run([str(EXAMPLE), str(bundle), str(tmp_path / "img"), *map(str, labels), *args],
                            capture_output=True, text=True, check=True)
    images = []
    for i in range(len(labels)):
        assert f"img{i}.png" in result.stdout
        with Image.open(tmp_path / f"img{i}.png") as im:
            im.load()
            assert im.format == "PNG" and im.mode == "RGB"
            images.append(np.asarray(im))
    return np.stack(images)


@pytest.mark.skipif(not EXAMPLE.exists(), reason="build/cpp not built (tests/run.sh builds it)")
def test_c_example_matches_python(native_gen, cfg_bundle, tmp_path):
    pixels = _example(tmp_path, DEMO_BUNDLE, [1, 7], "--steps", "8", "--seed", "5")
    assert pixels.shape == (2, native_gen.image_size, native_gen.image_size, 3)
    np.testing.assert_array_equal(pixels, native_gen.run([1, 7], steps=8, seed=5, progress=False).pixels)
    pixels = _example(tmp_path, DEMO_BUNDLE, [4], "--steps", "12", "--cfg", "2.0", "--seed", "3")
    np.testing.assert_array_equal(pixels, native_gen.run([4], steps=12, cfg=2.0, seed=3, progress=False).pixels)
    # No --cfg: the manifest's default for the step count, as Generator takes it.
    pixels = _example(tmp_path, cfg_bundle, [2, 9], "--steps", "8", "--seed", "1")
    ref = Generator(cfg_bundle, backend="native").run([2, 9], steps=8, seed=1, progress=False)
    np.testing.assert_array_equal(pixels, ref.pixels)
    failed = subprocess.run([str(EXAMPLE), str(DEMO_BUNDLE), str(tmp_path / "x"), "1", "--steps", "10"],
                            capture_output=True, text=True)
    assert failed.returncode == 1 and "available step counts: 8, 12" in failed.stderr
