"""Every Python backend of one bundle, driven by lpd_engine.driver, gives the torch reference's
tokens exactly (greedy, and sampled with the same seed), with and without guidance, at two step
counts, and images within one uint8 level. Backends that cannot run here are skipped with the
reason their BackendUnavailableError gives."""

import numpy as np
import pytest

from conftest import IMAGE_MAX_DIFF
from lpd_engine import bundle as bf, driver
from lpd_engine.errors import BackendUnavailableError
from lpd_engine.sampling import SamplingParams
from test_bundle import STEPS, make_bundle

LABELS = np.array([3, 0, 4])
SETTINGS = {
    "greedy": dict(temperature=0.0),
    "sampled": dict(temperature=1.0, seed=11),
    "sampled-top-k-p": dict(temperature=0.9, top_k=7, top_p=0.9, seed=12),
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return bf.open_bundle(make_bundle(tmp_path_factory.mktemp("equivalence")))


@pytest.fixture(scope="module")
def backends(bundle):
    return {"torch": bundle.make_backend("torch")}


def _backend(bundle, backends, name):
    if name not in backends:
        try:
            backends[name] = bundle.make_backend(name)
        except BackendUnavailableError as e:
            pytest.skip(str(e))
    return backends[name]


def _generate(bundle, backend, steps, params):
    s = bundle.schedule(steps)
    tokens = driver.generate_tokens(backend, bundle.config, LABELS, s.group_sizes, s.orders[: len(LABELS)], params)
    return tokens, backend.decode(tokens)


@pytest.mark.parametrize("name", ["onnxruntime", "tensorrt"])
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_same_tokens_and_images_as_torch(bundle, backends, name, steps, cfg, setting):
    backend = _backend(bundle, backends, name)
    params = SamplingParams(cfg=cfg, **SETTINGS[setting])
    ref_tokens, ref_pixels = _generate(bundle, backends["torch"], steps, params)
    tokens, pixels = _generate(bundle, backend, steps, params)
    np.testing.assert_array_equal(tokens, ref_tokens)
    assert pixels.dtype == np.uint8 and pixels.shape == ref_pixels.shape == (len(LABELS), 32, 32, 3)
    assert np.abs(pixels.astype(int) - ref_pixels).max() <= IMAGE_MAX_DIFF


def test_generator_on_the_bundle(bundle, backends):
    from lpd_engine import Generator

    try:
        results = {name: Generator(bundle.path, backend=name).run(LABELS, steps=20, cfg=3.0, seed=5)
                   for name in ("torch", "onnxruntime")}
    except NotImplementedError as e:  # the lead wires Generator to bundles separately
        pytest.skip(f"Generator does not open bundles yet: {e}")
    np.testing.assert_array_equal(results["torch"].tokens, results["onnxruntime"].tokens)
    assert np.abs(results["torch"].pixels.astype(int) - results["onnxruntime"].pixels).max() <= IMAGE_MAX_DIFF
