"""Generator.run on the torch reference: the KV-cached step-wise driver against a deliberately
naive generator that recomputes the whole sequence every step from the raw state dict, batch
independence of seeds, and typed errors for bad requests before any compute."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from factories import make_lpd_state_dict, make_vq_state_dict, tiny_vq_config
from lpd_engine import Generator, schedule
from lpd_engine.errors import InvalidLabelError, InvalidSamplingError, InvalidScheduleError
from lpd_engine.reference import LPDConfig

# A 16x16 grid so that the published group-size tables apply; small everything else.
CONFIG = LPDConfig(dim=32, depth=2, heads=2, vocab_size=23, num_classes=5, num_tokens=256, mlp_hidden=64)


@pytest.fixture(scope="module")
def state_dicts():
    return make_lpd_state_dict(CONFIG, seed=1), make_vq_state_dict(tiny_vq_config(), seed=2)


@pytest.fixture(scope="module")
def gen(state_dicts):
    return Generator.from_checkpoints({"model": state_dicts[0]}, state_dicts[1], heads=CONFIG.heads)


def naive_greedy(sd, cfg, labels, group_sizes, orders, guidance):
    """Greedy generation recomputing every slot at every step, with an explicit mask."""
    d, heads = CONFIG.dim, CONFIG.heads
    table = torch.cat([sd["token_emb.weight"], sd["class_emb.weight"], sd["fake_latent"],
                       sd["mask_token"].reshape(1, d)])
    pos = sd["pos_embed"][0]
    c = np.concatenate([[0, 1], 1 + np.cumsum(group_sizes)])
    n = CONFIG.num_tokens
    out = np.zeros((len(labels), n), np.int64)
    for b, y in enumerate(labels):
        tokens = []  # in generation order
        for k, g in enumerate(group_sizes):
            rows, pos_ids, visible = [], [], []
            for m in range(k + 1):  # context blocks 0..k: block m holds slots c[m]..c[m+1]-1
                for s in range(c[m], c[m + 1]):
                    rows.append(None if s == 0 else tokens[s - 1])
                    pos_ids.append(0 if s == 0 else 1 + orders[b, s - 1])
                    visible.append(c[m + 1])
            for s in range(c[k + 1], c[k + 2]):  # queries of step k
                rows.append(CONFIG.mask_index)
                pos_ids.append(1 + orders[b, s - 1])
                visible.append(c[k + 2])
            logits = []
            for cond in ([True, False] if guidance else [True]):
                ids = [(CONFIG.class_index(y) if cond else CONFIG.uncond_index) if r is None else r for r in rows]
                x = F.layer_norm(table[ids] + pos[pos_ids], (d,), sd["z_proj_ln.weight"], sd["z_proj_ln.bias"], 1e-6)
                t = len(ids)
                mask = torch.arange(t)[None, :] < torch.tensor(visible)[:, None]
                for i in range(CONFIG.depth):
                    p = f"blocks.{i}."
                    h = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
                    q, kk, v = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).split(d, -1)
                    q, kk, v = (z.reshape(t, heads, -1).transpose(0, 1) for z in (q, kk, v))
                    att = (q @ kk.transpose(1, 2)) / math.sqrt(d // heads)
                    att = att.masked_fill(~mask, -math.inf).softmax(-1)
                    a = (att @ v).transpose(0, 1).reshape(t, d)
                    x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
                    h = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
                    h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
                    x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
                x = F.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"], 1e-6)
                logits.append(F.linear(x[-g:], sd["head.weight"]))
            if guidance:
                t_idx = torch.arange(c[k + 1] - 1, c[k + 2] - 1, dtype=torch.float64)
                w = (1 + (cfg - 1) * t_idx / n).float()[:, None]
                final = logits[1] + w * (logits[0] - logits[1])
            else:
                final = logits[0]
            tokens.extend(final.argmax(-1).tolist())
        out[b, orders[b]] = tokens
    return out


@pytest.mark.parametrize("steps,cfg", [(8, 1.0), (8, 3.0), (12, 2.5)])
def test_cached_greedy_equals_naive_recompute(gen, state_dicts, steps, cfg):
    labels = [0, 3, 4]
    res = gen.run(labels, steps=steps, cfg=cfg, temperature=0.0, seed=5)
    with torch.no_grad():
        expected = naive_greedy(state_dicts[0], cfg, labels, res.group_sizes, res.orders, cfg != 1.0)
    assert np.array_equal(res.tokens, expected)
    assert len(np.unique(res.tokens)) > 3  # not a degenerate model


def test_explicit_orders_and_group_sizes(gen, state_dicts):
    orders = schedule.random_orders(CONFIG.num_tokens, 2, seed=3)
    group_sizes = [1, 5, 50, 200]
    res = gen.run([1, 2], group_sizes=group_sizes, orders=orders, temperature=0.0, cfg=1.0)
    assert np.array_equal(res.orders, orders) and res.group_sizes.tolist() == group_sizes
    with torch.no_grad():
        assert np.array_equal(res.tokens, naive_greedy(state_dicts[0], 1.0, [1, 2], group_sizes, orders, False))
    one = gen.run([1, 2], group_sizes=group_sizes, orders=orders[0], temperature=0.0, cfg=1.0)
    assert np.array_equal(one.orders, np.stack([orders[0], orders[0]]))


def test_same_seed_same_image_whatever_the_batch(gen):
    big = gen.run([1, 4, 2, 0], steps=8, cfg=2.0, top_k=10, seed=42)
    small = gen.run([1, 4], steps=8, cfg=2.0, top_k=10, seed=42)
    assert np.array_equal(big.tokens[:2], small.tokens)
    assert np.array_equal(big.pixels[:2], small.pixels)
    other = gen.run([1, 4], steps=8, cfg=2.0, top_k=10, seed=43)
    assert not np.array_equal(other.tokens, small.tokens)
    side = 16 * tiny_vq_config().downsample
    assert gen.image_size == side
    assert big.pixels.shape == (4, side, side, 3) and big.pixels.dtype == np.uint8
    assert len(big.images) == 4 and big.images[0].size == (side, side)


@pytest.mark.parametrize("kwargs,error", [
    (dict(labels=[5]), InvalidLabelError),
    (dict(labels=[-1]), InvalidLabelError),
    (dict(labels=[1.5]), InvalidLabelError),
    (dict(labels=[]), InvalidLabelError),
    (dict(labels=[[1, 2]]), InvalidLabelError),
    (dict(labels=[1], steps=21), InvalidScheduleError),
    (dict(labels=[1], steps=0), InvalidScheduleError),
    (dict(labels=[1], group_sizes=[1, 2, 3]), InvalidScheduleError),
    (dict(labels=[1], group_sizes=[1, 255], steps=3), InvalidScheduleError),
    (dict(labels=[1], orders=np.arange(255)), InvalidScheduleError),
    (dict(labels=[1], orders=np.zeros(256, np.int64)), InvalidScheduleError),
    (dict(labels=[1, 2], orders=np.stack([np.arange(256)] * 3)), InvalidScheduleError),
    (dict(labels=[1], top_p=0.0), InvalidSamplingError),
    (dict(labels=[1], top_p=1.01), InvalidSamplingError),
    (dict(labels=[1], temperature=-1.0), InvalidSamplingError),
    (dict(labels=[1], top_k=-2), InvalidSamplingError),
    (dict(labels=[1], cfg=math.nan), InvalidSamplingError),
    (dict(labels=[1], cfg=math.inf), InvalidSamplingError),
])
def test_bad_requests_raise_before_any_compute(gen, monkeypatch, kwargs, error):
    calls = []
    monkeypatch.setattr(gen.backend, "start", lambda *a: calls.append(a))
    with pytest.raises(error):
        gen.run(**kwargs)
    assert calls == []


def test_default_cfg_is_published_value_else_no_guidance(gen):
    from lpd_engine.defaults import preset_name, published_cfg_for

    assert published_cfg_for("lpd_l", 256) == {20: 4.8, 32: 5.4}
    assert published_cfg_for("lpd_l", 512) == {48: 7.3}
    assert preset_name(LPDConfig.preset("lpd_xl", 512)) == "lpd_xl" and preset_name(CONFIG) is None
    assert gen.run([1], steps=8, seed=0).params.cfg == 1.0  # no published value for this model
    published = Generator._assemble(gen.backend, gen.config, gen.image_size, {8: 3.5})
    assert published.run([1], steps=8, seed=0).params.cfg == 3.5
    assert published.run([1], steps=8, cfg=1.5, seed=0).params.cfg == 1.5


def test_demo_bundle_gives_the_same_tokens_on_every_backend():
    from lpd_engine.errors import BackendUnavailableError

    results = {}
    for backend in ("native", "onnxruntime", "torch"):
        try:
            gen = Generator(backend=backend)
        except BackendUnavailableError as e:
            pytest.skip(str(e))
        results[backend] = gen.run([1, 7], steps=8, cfg=2.0, seed=3, progress=False)
    ref = results["torch"]
    for name, res in results.items():
        assert np.array_equal(res.tokens, ref.tokens), name
        assert np.array_equal(res.orders, ref.orders), name
        assert np.abs(res.pixels.astype(int) - ref.pixels).max() <= 1, name


def test_bundle_orders_are_picked_per_image_by_seed():
    gen = Generator(backend="torch")
    precomputed = gen.bundle.schedule(8)
    a = gen.run([1, 2, 3], steps=8, temperature=0.0, seed=9, progress=False)
    b = gen.run([3], steps=8, temperature=0.0, seed=9, progress=False)
    picks = schedule.order_picks(9, 3, len(precomputed.orders))
    assert np.array_equal(a.orders, precomputed.orders[picks])
    assert np.array_equal(b.orders[0], a.orders[0])  # image 0 of seed 9, whatever the batch


def test_demo_generates_without_torch_or_onnx(tmp_path):
    """The README's first command must not need torch: bundles, configs and the native backend
    import none of it."""
    import subprocess
    import sys

    script = tmp_path / "no_torch.py"
    script.write_text(
        "import builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime'):\n"
        "        raise ImportError('blocked: ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from lpd_engine import Generator\n"
        "gen = Generator()\n"
        "res = gen.run([1, 2], steps=8, seed=0, progress=False)\n"
        "print(type(gen.backend).__name__, res.pixels.shape)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "NativeEngine"


def test_native_runs_batches_larger_than_its_kv_pool():
    """The native engine's pool holds 8 guided demo images; 19 images run as queued requests
    that keep their RNG image indices, so the tokens are those of the one-batch backends."""
    from lpd_engine.errors import BackendUnavailableError

    try:
        native = Generator(backend="native")
    except BackendUnavailableError as e:
        pytest.skip(str(e))
    labels = [i % 10 for i in range(19)]
    per_request = native.backend.num_blocks // native.backend.blocks_for(1, True)
    assert per_request < len(labels)
    res = native.run(labels, steps=8, seed=6, progress=False)
    ref = Generator(backend="onnxruntime").run(labels, steps=8, seed=6, progress=False)
    assert res.params.guided
    assert np.array_equal(res.tokens, ref.tokens)
    assert native.backend.free_blocks == native.backend.num_blocks


def test_device_is_checked_before_any_work():
    with pytest.raises(ValueError, match="device"):
        Generator(device="gpu")
    with pytest.raises(ValueError, match="native backend"):
        Generator(backend="torch", device="cuda")
    with pytest.raises(ValueError, match="precision"):
        Generator(precision="bf16")  # bf16 is the GPU's


def test_device_cuda_without_a_gpu_is_a_clear_error():
    """Where no GPU is visible (CI), device "cuda" fails at construction with a message saying
    why: no CUDA path in the build, or no CUDA device."""
    from lpd_engine.errors import BackendUnavailableError

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: tests/test_cuda.py covers device cuda")
    try:
        from lpd_engine import _C  # noqa: F401
    except ImportError:
        pytest.skip("lpd_engine._C is not built")
    with pytest.raises((ValueError, BackendUnavailableError), match="CUDA|cuda"):
        Generator(device="cuda")
