"""The bundle's ONNX graphs: checker-clean standard ops with their weights in weights.safetensors,
and the same numbers as the PyTorch reference: the step graph at two batch sizes and two row
counts (with and without a cache, P = 0 included), the VQ graph to uint8 within one level, and a
bf16 bundle's graphs computing in float32 from the bf16 weights."""

import numpy as np
import onnx
import pytest
import torch

from conftest import FP32_LOGITS_RTOL, IMAGE_MAX_DIFF
from lpd_engine import bundle as bf
from lpd_engine.reference import to_uint8
from test_bundle import CONFIG, make_bundle

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def bundle(request, tmp_path_factory):
    return bf.open_bundle(make_bundle(tmp_path_factory.mktemp(request.param), dtype=request.param))


@pytest.fixture(scope="module")
def models(bundle):
    return bundle.reference_models()


def _session(bundle, graph):
    return ort.InferenceSession(str(bundle.graph_path(graph)), providers=["CPUExecutionProvider"])


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("graph", ["step", "vq_decoder"])
def test_graph_is_standard_and_points_into_the_weights(bundle, graph):
    path = bundle.graph_path(graph)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.ir_version == 10
    assert all(o.domain in ("", "ai.onnx") and o.version >= 17 for o in proto.opset_import)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    weights = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    stored = {"fp32": onnx.TensorProto.FLOAT, "bf16": onnx.TensorProto.BFLOAT16}[bundle.dtype]
    assert weights and all(t.data_type == stored for t in weights)
    assert {e.key: e.value for e in weights[0].external_data}["location"] == bf.WEIGHTS
    expected = len([p for p in bf.layout(bundle.config, bundle.vq_config)[1]
                    if p.model == ("lpd" if graph == "step" else "vq") and not p.official.startswith(("encoder.", "quant_conv."))])
    assert len(weights) == expected
    meta = {p.key: p.value for p in proto.metadata_props}
    bundle.check_graph(graph, meta)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("rows, num_context, past", [(2, 1, 0), (9, 4, 0), (2, 1, 17), (9, 4, 17)])
def test_step_graph_matches_reference_step(bundle, models, batch, rows, num_context, past):
    model = models[0]
    gen = torch.Generator().manual_seed(batch * 100 + rows + past)
    embed_ids = torch.randint(0, CONFIG.table_rows, (batch, rows), generator=gen)
    pos_ids = torch.randint(0, CONFIG.num_tokens + 1, (batch, rows), generator=gen)
    shape = (CONFIG.depth, batch, CONFIG.heads, past, CONFIG.head_dim)
    past_k, past_v = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    with torch.no_grad():
        expected = model.step(embed_ids, pos_ids, past_k, past_v, num_context)
    got = _session(bundle, "step").run(None, {
        "embed_ids": embed_ids.numpy(), "pos_ids": pos_ids.numpy(), "past_k": past_k.numpy(),
        "past_v": past_v.numpy(), "num_context": np.array(num_context, np.int64)})
    for name, g, e in zip(["logits", "k_new", "v_new"], got, expected):
        assert g.shape == tuple(e.shape) and g.dtype == np.float32, name
        assert _rel(g, e.numpy()) < FP32_LOGITS_RTOL, name


@pytest.mark.parametrize("batch", [1, 2])
def test_vq_graph_matches_reference_decode(bundle, models, batch):
    vq = models[1]
    tokens = torch.randint(0, vq.config.codebook_size, (batch, CONFIG.num_tokens), generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = to_uint8(vq.decode_codes(tokens))
    (got,) = _session(bundle, "vq_decoder").run(None, {"tokens": tokens.numpy()})
    assert got.dtype == np.uint8 and got.shape == expected.shape == (batch, 32, 32, 3)
    assert np.abs(got.astype(int) - expected).max() <= IMAGE_MAX_DIFF
