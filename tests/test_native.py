"""The native C++ backend (lpd_engine.backends.native) against the torch reference driver.

A small random-weight bundle built by export/build_engine.py; the same schedule, labels and
seed must give IDENTICAL tokens through lpd_engine.driver + the torch backend and through the
C++ runtime (greedy and sampled, guidance on and off, three schedules, batch 1 and 7), decoded
images within IMAGE_MAX_DIFF levels, and the request runtime must keep every request's tokens
whatever it is batched or queued with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import IMAGE_MAX_DIFF, require_native  # noqa: E402
from factories import make_lpd_state_dict, make_vq_state_dict, tiny_vq_config  # noqa: E402
from lpd_engine import driver, errors, schedule  # noqa: E402
from lpd_engine.reference import LPDConfig, build_lpd, build_vq  # noqa: E402
from lpd_engine.sampling import SamplingParams  # noqa: E402

native = require_native()

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
import build_engine  # noqa: E402

# V equals the codebook size so every generated token decodes; N = 16 (a 4 x 4 grid).
CONFIG = LPDConfig(dim=64, depth=2, heads=4, vocab_size=29, num_classes=10, num_tokens=16, mlp_hidden=256)
N = CONFIG.num_tokens
SCHEDULES = {  # name: group sizes
    "two_steps": [1, 15],
    "four_steps": [1, 2, 5, 8],
    "one_per_step": [1] * 16,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from lpd_engine.backends.torch_backend import TorchBackend

    lpd_sd, vq_sd = make_lpd_state_dict(CONFIG, seed=3), make_vq_state_dict(tiny_vq_config(), seed=4)
    out = build_engine.build_bundle(lpd_sd, vq_sd, tmp_path_factory.mktemp("native") / "bundle", onnx=False,
                                    progress=False, steps=[])
    return TorchBackend(build_lpd(lpd_sd), build_vq(vq_sd)), out


@pytest.fixture(scope="module")
def engine(models):
    return native.NativeEngine(models[1], kv_pool_blocks=64, num_threads=2)


def _orders(group_sizes, batch, seed):
    return schedule.locality_orders(CONFIG.grid, group_sizes, batch, seed)


@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("params", [
    SamplingParams(cfg=1.0, temperature=0.0),
    SamplingParams(cfg=3.0, temperature=0.0, seed=1),
    SamplingParams(cfg=1.0, temperature=1.0, seed=5),
    SamplingParams(cfg=4.0, temperature=1.2, seed=9),
    SamplingParams(cfg=2.0, cfg_schedule="constant", temperature=0.8, top_k=6, top_p=0.7, seed=2),
], ids=["greedy", "greedy-cfg", "sampled", "sampled-cfg", "topk-topp-constant"])
def test_tokens_match_torch_driver(models, engine, schedule_name, batch, params):
    torch_backend, _ = models
    group_sizes = np.array(SCHEDULES[schedule_name])
    labels = np.arange(batch) % CONFIG.num_classes
    orders = _orders(group_sizes, batch, params.seed)
    expected = driver.generate_tokens(torch_backend, CONFIG, labels, group_sizes, orders, params)
    got = engine.generate_tokens(labels, group_sizes, orders, params)
    assert got.dtype == np.int64 and got.shape == (batch, N)
    np.testing.assert_array_equal(got, expected)


def test_images_match_torch(models, engine):
    torch_backend, _ = models
    tokens = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(3, N))
    expected = torch_backend.decode(tokens)
    got = engine.decode(tokens)
    assert got.dtype == np.uint8 and got.shape == expected.shape == (3, engine.image_size, engine.image_size, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= IMAGE_MAX_DIFF
    # generate() returns the same pixels as decode() of its tokens.
    params = SamplingParams(cfg=2.0, seed=3)
    orders = _orders(SCHEDULES["four_steps"], 2, 3)
    toks, pixels = engine.generate([1, 2], SCHEDULES["four_steps"], orders, params)
    np.testing.assert_array_equal(pixels, engine.decode(toks))


def _requests():
    """(labels, group sizes, params) of requests that differ in steps, guidance and seeds."""
    return [
        ([1, 2, 3], SCHEDULES["four_steps"], SamplingParams(cfg=3.0, seed=7)),
        ([4], SCHEDULES["one_per_step"], SamplingParams(cfg=1.0, seed=11)),
        ([5, 6], SCHEDULES["two_steps"], SamplingParams(cfg=2.0, temperature=0.0)),
        ([7, 8, 9, 0], [1, 3, 3, 3, 6], SamplingParams(cfg=1.5, top_k=4, seed=5)),
        ([2], SCHEDULES["four_steps"], SamplingParams(cfg=1.0, top_p=0.5, seed=5)),
    ]


def test_continuous_batching_matches_alone(engine):
    reqs = _requests()
    alone = [engine.generate_tokens(lab, g, _orders(g, len(lab), p.seed), p) for lab, g, p in reqs]
    ids = []
    for i, (lab, g, p) in enumerate(reqs):  # one new request every other step
        ids.append(engine.submit(lab, g, _orders(g, len(lab), p.seed), p, decode_pixels=False))
        engine.step()
        if i % 2:
            engine.step()
    assert engine.poll(ids[1]) in ("running", "done")
    while engine.step():
        pass
    for rid, expected in zip(ids, alone):
        assert engine.poll(rid) == "done"
        tokens, pixels = engine.take(rid)
        assert pixels is None
        np.testing.assert_array_equal(tokens, expected)
    with pytest.raises(KeyError):
        engine.poll(ids[0])


def test_small_pool_queues_and_completes(models, engine):
    reqs = _requests()
    alone = [engine.generate_tokens(lab, g, _orders(g, len(lab), p.seed), p) for lab, g, p in reqs]
    tight = native.NativeEngine(models[1], kv_pool_blocks=16, num_threads=2)  # 17 slots = 2 blocks per sequence
    assert [tight.blocks_for(len(lab), p.guided) for lab, _, p in reqs] == [12, 2, 8, 16, 2]
    ids = [tight.submit(lab, g, _orders(g, len(lab), p.seed), p, decode_pixels=False) for lab, g, p in reqs]
    tight.step()
    assert [tight.poll(i) for i in ids] == ["running", "running", "queued", "queued", "queued"]
    assert tight.free_blocks == 2
    while tight.step():
        pass
    assert tight.free_blocks == tight.num_blocks
    for rid, expected in zip(ids, alone):
        np.testing.assert_array_equal(tight.take(rid)[0], expected)
    with pytest.raises(errors.InvalidRequestError, match="whole pool"):
        tight.submit([1, 2, 3, 4, 5], SCHEDULES["two_steps"], _orders(SCHEDULES["two_steps"], 5, 0),
                     SamplingParams(cfg=2.0))


def test_pool_size_in_bytes(models):
    block_bytes = 2 * CONFIG.depth * 16 * CONFIG.dim * 4
    assert native.NativeEngine(models[1], kv_pool_bytes=7 * block_bytes + 5).num_blocks == 7


def test_precision_is_the_devices_unless_chosen(models):
    """The CPU runs float32 only: "fp32" (or the default) is accepted, "bf16" and unknown names
    are refused with a message naming the choices."""
    assert native.NativeEngine(models[1]).precision == "fp32"
    assert native.NativeEngine(models[1], precision="fp32").precision == "fp32"
    for bad in ("bf16", "fp16"):
        with pytest.raises(errors.InvalidRequestError, match='precision must be "fp32" on device "cpu"'):
            native.NativeEngine(models[1], precision=bad)


@pytest.mark.parametrize("kwargs, error", [
    (dict(labels=[10]), errors.InvalidLabelError),
    (dict(labels=[-1]), errors.InvalidLabelError),
    (dict(group_sizes=[1, 14]), errors.InvalidScheduleError),
    (dict(orders=np.zeros(N, np.int64)), errors.InvalidScheduleError),
    (dict(params="top_p=0"), errors.InvalidSamplingError),
])
def test_bad_requests_raise_typed_errors(engine, kwargs, error):
    request = dict(labels=[1], group_sizes=[1, 15], orders=np.arange(N), params=SamplingParams())
    request.update(kwargs)
    if request["params"] == "top_p=0":  # SamplingParams refuses it, so bypass its check: the C++ one must catch it
        bad = SamplingParams()
        object.__setattr__(bad, "top_p", 0.0)
        request["params"] = bad
    with pytest.raises(error):
        engine.submit(**request)


def test_bad_bundles_raise_bundle_error(models, tmp_path):
    import shutil

    bundle = shutil.copytree(models[1], tmp_path / "copy")
    weights = bundle / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(errors.BundleError, match="sha256"):
        native.NativeEngine(bundle)
    weights.write_bytes(bytes(data[:-64]))
    with pytest.raises(errors.BundleError):
        native.NativeEngine(bundle)
    with pytest.raises(errors.BundleError):
        native.NativeEngine(tmp_path / "missing")


def test_first_image_continues_the_rng_streams_of_a_split_batch():
    """A request for images 3.. of a batch with first_image=3 samples exactly those images."""
    from lpd_engine.bundle import DEMO_BUNDLE

    engine = native.NativeEngine(DEMO_BUNDLE)
    labels = np.array([2, 5, 1, 7, 7, 0])
    gs = schedule.published_group_sizes(16, 8)
    orders = schedule.random_orders(256, len(labels), seed=2)
    params = SamplingParams(cfg=2.0, top_k=40, seed=11)
    whole = engine.generate(labels, gs, orders, params, decode_pixels=False)[0]
    tail = engine.submit(labels[3:], gs, orders[3:], params, decode_pixels=False, first_image=3)
    while engine.step():
        pass
    assert np.array_equal(engine.take(tail)[0], whole[3:])
    head = engine.generate(labels[3:], gs, orders[3:], params, decode_pixels=False)[0]
    assert not np.array_equal(head, whole[3:])  # without the offset they are other images
