"""Engine bundles: the naming table against the reference models, export/build_engine.py on an
official-layout checkpoint pair written to disk, the manifest, and the loader refusing every
kind of damage (flipped byte, truncation, a missing or re-typed tensor, a future format, a
graph that belongs to other weights) with a BundleError that names the file.

`make_bundle` is imported by the ONNX and backend tests too: one small model, built once per file.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from factories import make_lpd_state_dict, make_vq_state_dict, tiny_lpd_config, tiny_vq_config
from lpd_engine import bundle as bf, schedule
from lpd_engine.errors import BackendUnavailableError, BundleError
from lpd_engine.reference import LPDConfig, LPDTransformer, VQConfig, VQModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
import build_engine  # noqa: E402

# A 16x16 grid so the published group-size tables apply; small everything else.
CONFIG = LPDConfig(dim=32, depth=2, heads=2, vocab_size=23, num_classes=5, num_tokens=256, mlp_hidden=64)
STEPS = (8, 20)
ORDERS = 6


def make_bundle(tmp: Path, dtype: str = "fp32", seed: int = 1, onnx: bool = True) -> Path:
    """Write an official-layout checkpoint pair ({"model": sd} .pth, bare-dict .pt) and build a bundle."""
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"model": make_lpd_state_dict(CONFIG, seed=seed)}, tmp / "lpd.pth")
    torch.save(make_vq_state_dict(tiny_vq_config(), seed=seed + 1), tmp / "vq.pt")
    return build_engine.build_bundle(tmp / "lpd.pth", tmp / "vq.pt", tmp / "bundle", dtype=dtype, steps=STEPS,
                                     orders=ORDERS, seed=7, heads=CONFIG.heads, onnx=onnx, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def copy(built, tmp_path) -> Path:
    """A private copy of the built bundle to damage."""
    return Path(shutil.copytree(built, tmp_path / "copy"))


def _rewrite_manifest(path: Path, change=lambda m: None) -> None:
    """Apply `change` to the manifest and refresh every file's size and sha256, so that only the
    problem a test plants is left for the loader to find."""
    m = json.loads((path / bf.MANIFEST).read_text())
    change(m)
    m["files"] = {name: bf.file_entry(path / name) for name in m["files"]}
    (path / bf.MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("lpd, vq", [(CONFIG, tiny_vq_config()), (tiny_lpd_config(36), tiny_vq_config(False)),
                                     (LPDConfig.preset("lpd_l"), VQConfig.llamagen_ds16())])
def test_layout_covers_the_reference_models(lpd, vq):
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for m in (LPDTransformer(lpd), VQModel(vq)) for k, v in m.state_dict().items()}
    expected.pop("quantize.codebook_used")  # training-time buffer, not stored
    shapes, pieces = bf.layout(lpd, vq)
    assert {p.official: p.official_shape for p in pieces} == expected
    assert shapes["embed.table"] == (lpd.table_rows, lpd.dim) and shapes["embed.pos"] == (lpd.num_tokens + 1, lpd.dim)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_naming_round_trip(dtype):
    vq = tiny_vq_config()
    lpd_sd, vq_sd = make_lpd_state_dict(CONFIG, seed=3), make_vq_state_dict(vq, seed=4)
    tensors = bf.to_bundle_tensors(lpd_sd, vq_sd, CONFIG, vq, dtype)
    assert all(t.dtype == bf.torch_dtype(dtype) for t in tensors.values())
    table = tensors["embed.table"].float()
    assert torch.equal(table[CONFIG.class_index(2)], lpd_sd["class_emb.weight"][2].to(bf.torch_dtype(dtype)).float())
    assert torch.equal(table[CONFIG.mask_index], lpd_sd["mask_token"].flatten().to(bf.torch_dtype(dtype)).float())
    lpd_back, vq_back = bf.from_bundle_tensors(tensors, CONFIG, vq)
    assert lpd_back.keys() == lpd_sd.keys() and vq_back.keys() == vq_sd.keys() - {"quantize.codebook_used"}
    for sd, back in ((lpd_sd, lpd_back), (vq_sd, vq_back)):
        for k, t in back.items():
            assert torch.equal(t, sd[k].to(bf.torch_dtype(dtype)).float()), k


def test_manifest(built):
    m = json.loads((built / bf.MANIFEST).read_text())
    assert m["format_version"] == 1 and m["dtype"] == "fp32" and m["name"] == "lpd"
    assert m["config"] == CONFIG.to_dict() and m["vq_config"] == tiny_vq_config().to_dict()
    assert m["image_size"] == 16 * tiny_vq_config().downsample and m["default_cfg"] == {}
    assert set(m["schedules"]) == {"8", "20"}
    assert m["schedules"]["20"] == {"file": "schedules/steps20.npz", "count": ORDERS, "repulsion": 2.0,
                                    "proximity": 1.0, "seed": 7}
    assert set(m["graphs"]) == {"step", "vq_decoder"}
    on_disk = {str(p.relative_to(built)) for p in built.rglob("*") if p.is_file()} - {bf.MANIFEST}
    assert set(m["files"]) == on_disk
    for name, entry in m["files"].items():
        assert entry == bf.file_entry(built / name)


def test_open_bundle_api(built):
    b = bf.open_bundle(built)
    assert b.config == CONFIG and b.vq_config == tiny_vq_config() and b.image_size == 32 and b.dtype == "fp32"
    assert b.default_cfg == {} and b.schedule_steps == [8, 20] and b.schedule(12) is None
    s = b.schedule(20)
    np.testing.assert_array_equal(s.group_sizes, schedule.published_group_sizes(16, 20))
    np.testing.assert_array_equal(s.orders, schedule.locality_orders(16, s.group_sizes, ORDERS, seed=7))
    lpd_sd, _ = b.load_state_dicts()
    original = make_lpd_state_dict(CONFIG, seed=1)
    assert all(torch.equal(lpd_sd[k], original[k]) for k in original)


def test_build_writes_weights_once_and_replaces_old_bundles(built, tmp_path):
    weights = (built / bf.WEIGHTS).stat().st_size
    graphs = sum((built / f).stat().st_size for f in bf.GRAPH_FILES.values())
    assert graphs < weights / 10
    again = make_bundle(tmp_path, onnx=False)
    assert not (again / "step.onnx").exists() and not again.with_name("bundle.partial").exists()
    assert bf.open_bundle(again).manifest["graphs"] == {}


def test_cli_builds_from_checkpoint_files(tmp_path, capsys):
    torch.save({"model": make_lpd_state_dict(CONFIG, seed=1)}, tmp_path / "lpd.pth")
    torch.save(make_vq_state_dict(tiny_vq_config(), seed=2), tmp_path / "vq.pt")
    build_engine.main(["--checkpoint", str(tmp_path / "lpd.pth"), "--vq", str(tmp_path / "vq.pt"), "--out",
                       str(tmp_path / "b"), "--steps", "8", "--orders", "3", "--heads", "2", "--dtype", "bf16",
                       "--no-onnx", "--name", "tiny"])
    out = capsys.readouterr().out
    assert "schedules  steps 8; 3 orders each" in out and "onnx       none" in out
    b = bf.open_bundle(tmp_path / "b")
    assert (b.name, b.dtype, b.schedule_steps) == ("tiny", "bf16", [8])
    assert build_engine.DEFAULT_OUT == bf.DEMO_BUNDLE


def test_flipped_byte_is_refused(copy):
    path = copy / bf.WEIGHTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.safetensors: sha256 mismatch"):
        bf.open_bundle(copy)


@pytest.mark.parametrize("name", [bf.WEIGHTS, "step.onnx", "schedules/steps8.npz"])
def test_truncated_file_is_refused(copy, name):
    path = copy / name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BundleError, match=rf"{name}: truncated"):
        bf.open_bundle(copy)


def test_truncated_weights_with_a_matching_manifest_are_refused(copy):
    path = copy / bf.WEIGHTS
    path.write_bytes(path.read_bytes()[:-100])
    _rewrite_manifest(copy)
    with pytest.raises(BundleError, match=r"weights\.safetensors: .*truncated"):
        bf.open_bundle(copy)


def test_missing_file_is_refused(copy):
    (copy / "vq_decoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"vq_decoder\.onnx: missing"):
        bf.open_bundle(copy)


def _resave(path: Path, change) -> None:
    tensors = load_file(path / bf.WEIGHTS)
    change(tensors)
    save_file(tensors, path / bf.WEIGHTS)
    _rewrite_manifest(path)


def test_deleted_tensor_is_refused(copy):
    _resave(copy, lambda t: t.pop("layers.1.fc2.bias"))
    with pytest.raises(BundleError, match=r"weights\.safetensors: missing tensors \['layers\.1\.fc2\.bias'\]"):
        bf.open_bundle(copy)


def test_extra_tensor_is_refused(copy):
    _resave(copy, lambda t: t.update({"layers.9.qkv.weight": torch.zeros(3)}))
    with pytest.raises(BundleError, match=r"unexpected tensors \['layers\.9\.qkv\.weight'\]"):
        bf.open_bundle(copy)


def test_wrong_dtype_and_shape_are_refused(copy):
    _resave(copy, lambda t: t.update({"head.weight": t["head.weight"].half()}))
    with pytest.raises(BundleError, match=r"'head\.weight' is F16 \[23, 32\], expected F32 \[23, 32\]"):
        bf.open_bundle(copy)
    _resave(copy, lambda t: t.update({"head.weight": t["head.weight"].float()[:, :31].contiguous()}))
    with pytest.raises(BundleError, match=r"'head\.weight' is F32 \[23, 31\], expected F32 \[23, 32\]"):
        bf.open_bundle(copy)


def test_future_format_version_is_refused(copy):
    _rewrite_manifest(copy, lambda m: m.update(format_version=2, something_new={}))
    with pytest.raises(BundleError, match=r"manifest\.json: format_version 2 is newer than this lpd-engine reads"):
        bf.open_bundle(copy)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("config"), "field 'config' is missing"),
    (lambda m: m["config"].update(dim=33), "bad model description"),
    (lambda m: m.update(image_size=64), "image_size 64"),
    (lambda m: m.update(dtype="fp8"), "dtype 'fp8'"),
    (lambda m: m["schedules"]["8"].update(file="schedules/steps9.npz"), "names no file listed"),
])
def test_malformed_manifest_is_refused(copy, change, message):
    _rewrite_manifest(copy, change)
    with pytest.raises(BundleError, match=message):
        bf.open_bundle(copy)


def test_unreadable_manifest_and_non_bundles_are_refused(copy, tmp_path):
    with pytest.raises(BundleError, match="not a bundle directory"):
        bf.open_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        bf.open_bundle(tmp_path)
    (copy / bf.MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        bf.open_bundle(copy)


def test_schedule_that_disagrees_with_the_manifest_is_refused(copy):
    _rewrite_manifest(copy, lambda m: m["schedules"]["8"].update(count=ORDERS + 1))
    b = bf.open_bundle(copy)
    with pytest.raises(BundleError, match=r"steps8\.npz: holds 8 steps and orders \[6, 256\]"):
        b.schedule(8)


def test_graph_of_other_weights_is_refused(copy, tmp_path):
    pytest.importorskip("onnxruntime")
    other = make_bundle(tmp_path / "other", seed=5)
    shutil.copy(other / "step.onnx", copy / "step.onnx")
    _rewrite_manifest(copy)  # hashes consistent: only the graph's own record of its weights is wrong
    b = bf.open_bundle(copy)
    with pytest.raises(BundleError, match=r"step\.onnx: does not match this bundle's weights .*lpd\.weights_sha256"):
        b.make_backend("onnxruntime")


def test_make_backend_names(built):
    b = bf.open_bundle(built)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        b.make_backend("cuda")


def test_tensorrt_missing_is_a_typed_error_before_any_work(built, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        bf.open_bundle(built).make_backend("tensorrt")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        build_engine.build_bundle(built / "no.pth", built / "no.pt", tmp_path / "b", tensorrt=True, progress=False)
    assert not (tmp_path / "b.partial").exists()


def test_shipped_demo_bundle_is_current():
    """python/lpd_engine/data/demo_bundle holds the MNIST pair of examples/train_mnist/checkpoints:
    rebuild it with `python export/build_engine.py` when they change."""
    from lpd_engine.reference import load_lpd_state_dict, load_vq_state_dict

    b = bf.open_bundle(bf.DEMO_BUNDLE)
    assert (b.name, b.dtype, b.vq_config.has_encoder) == (build_engine.DEMO_NAME, "fp32", False)
    assert b.default_cfg == {s: build_engine.DEMO_CFG for s in b.schedule_steps}
    assert b.schedule_steps == schedule.published_steps(16)
    lpd_sd = load_lpd_state_dict(build_engine.DEMO_CHECKPOINTS / "lpd_mnist.pth")
    vq_sd = load_vq_state_dict(build_engine.DEMO_CHECKPOINTS / "vq_mnist.pt")
    vq_sd = {k: v for k, v in vq_sd.items() if not k.startswith(("encoder.", "quant_conv."))}
    expected = bf.to_bundle_tensors(lpd_sd, vq_sd, b.config, b.vq_config, b.dtype)
    stored = load_file(b.path / bf.WEIGHTS)
    assert stored.keys() == expected.keys()
    assert all(torch.equal(stored[k], expected[k]) for k in expected)
