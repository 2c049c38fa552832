"""The two ONNX graphs of a bundle: one LPD step over a KV cache, and the VQ decoder to uint8.

Both are traced from the PyTorch reference (lpd_engine.reference) with the TorchScript-based
exporter, then their weights are re-pointed into the bundle's weights.safetensors as ONNX
external data (location, byte offset, length), so no weight is stored twice. Each graph's
initializers keep the official parameter names; lpd_engine.bundle.layout says which bundle tensor
(and which rows of it) each one is. Bundles in fp16/bf16 keep their stored dtype in the file and
the graph casts each weight to float32 once: all arithmetic is float32, which every
onnxruntime provider and TensorRT accept (onnxruntime's CPU provider lacks most bf16 kernels).

Step graph I/O (B sequences, R new rows, P cached slots; all three dynamic, P may be 0):
  embed_ids int64 [B, R], pos_ids int64 [B, R], past_k/past_v float32 [L, B, H, P, hd],
  num_context int64 scalar  ->  logits float32 [B, R - num_context, V],
  k_new/v_new float32 [L, B, H, R, hd].
VQ graph: tokens int64 [B, h*w] (raster)  ->  pixels uint8 [B, H, W, 3].
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from lpd_engine import bundle as bundle_format

OPSET = 17
IR_VERSION = 10  # onnxruntime refuses the IR version 14 onnx 1.23 writes by default
_MAX_EMBEDDED_BYTES = 1 << 16  # initializers that are not weights (small constants) stay inline

_ONNX_DTYPE = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16,
               "bf16": onnx.TensorProto.BFLOAT16}


class StepGraph(nn.Module):
    """LPDTransformer.step with num_context as a tensor, so the traced graph keeps it dynamic
    (the reference's traceable_step: step without its Python-side checks)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, embed_ids: Tensor, pos_ids: Tensor, past_k: Tensor, past_v: Tensor,
                num_context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.traceable_step(embed_ids, pos_ids, past_k, past_v, num_context)


class DecodeGraph(nn.Module):
    """VQModel.decode_codes then lpd_engine.reference.to_uint8's arithmetic, inside the graph:
    round-half-even(clip((x + 1) / 2 * 255, 0, 255)) in float32, as uint8 [B, H, W, 3]."""

    def __init__(self, vq):
        super().__init__()
        self.model = vq

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.model.decode_codes(tokens)
        x = torch.round(torch.clamp((x + 1) / 2 * 255, 0, 255))
        return x.to(torch.uint8).permute(0, 2, 3, 1)


def export_graphs(out_dir: Path, model, vq, dtype: str, weights_sha256: str) -> dict:
    """Write step.onnx and vq_decoder.onnx into out_dir, next to its weights.safetensors.

    model, vq: float32 reference models (their weight values do not matter: the graphs read the
    bundle's). Returns the manifest's "graphs" entry.
    """
    cfg, vq_cfg = model.config, vq.config
    links = _WeightLinks(out_dir / bundle_format.WEIGHTS, dtype, *bundle_format.layout(cfg, vq_cfg))
    batch, rows, past = 2, 5, 3  # sizes other than 0 and 1, so the trace keeps them symbolic
    step_args = (torch.full((batch, rows), cfg.mask_index), torch.zeros(batch, rows, dtype=torch.long),
                 torch.zeros(cfg.depth, batch, cfg.heads, past, cfg.head_dim),
                 torch.zeros(cfg.depth, batch, cfg.heads, past, cfg.head_dim), torch.tensor(2))
    step_axes = {"embed_ids": {0: "batch", 1: "rows"}, "pos_ids": {0: "batch", 1: "rows"},
                 "past_k": {1: "batch", 3: "past"}, "past_v": {1: "batch", 3: "past"},
                 "logits": {0: "batch", 1: "queries"}, "k_new": {1: "batch", 3: "rows"},
                 "v_new": {1: "batch", 3: "rows"}}
    graphs = {
        "step": (StepGraph(model), step_args, ["embed_ids", "pos_ids", "past_k", "past_v", "num_context"],
                 ["logits", "k_new", "v_new"], step_axes, "lpd"),
        "vq_decoder": (DecodeGraph(vq), (torch.zeros(2, cfg.num_tokens, dtype=torch.long),), ["tokens"],
                       ["pixels"], {"tokens": {0: "batch"}, "pixels": {0: "batch"}}, "vq"),
    }
    entries = {}
    for name, (module, args, inputs, outputs, axes, kind) in graphs.items():
        out_path = out_dir / bundle_format.GRAPH_FILES[name]
        metadata = bundle_format.graph_metadata(name, cfg, vq_cfg, dtype, weights_sha256)
        _export(module, args, inputs, outputs, axes, out_path, links.restricted(kind), metadata)
        entries[name] = {"file": out_path.name, "opset": OPSET, "compute_dtype": "float32",
                         "weights": "external"}
    return entries


@dataclass(frozen=True)
class _WeightLinks:
    """Where the official tensors of one model ("lpd" or "vq") lie in weights.safetensors."""

    weights: Path
    dtype: str
    shapes: dict
    pieces: list

    def restricted(self, model_kind: str) -> "_WeightLinks":
        return _WeightLinks(self.weights, self.dtype, self.shapes, [p for p in self.pieces if p.model == model_kind])


def _export(module: nn.Module, args, inputs, outputs, axes, out_path: Path, links: _WeightLinks,
            metadata: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        traced = Path(tmp) / "graph.onnx"
        torch.onnx.export(module.eval(), args, str(traced), dynamo=False, opset_version=OPSET,
                          do_constant_folding=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes)
        proto = onnx.load(str(traced), load_external_data=False)
    _point_into_weights(proto, links)
    proto.ir_version = IR_VERSION
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    out_path.write_bytes(proto.SerializeToString())
    onnx.checker.check_model(str(out_path), full_check=True)


def _point_into_weights(proto: onnx.ModelProto, links: _WeightLinks) -> None:
    """Replace each weight initializer by external data at its bytes in weights.safetensors.

    Initializer "model.<official name>" is official tensor <official name>; the layout gives
    its bundle tensor and first row, the safetensors header the byte offset. For fp16/bf16 the
    initializer keeps the stored dtype under a new name and a Cast makes the float32 original.
    """
    by_official = {p.official: p for p in links.pieces}
    header = bundle_format.read_safetensors_header(links.weights)
    casts = []
    for init in proto.graph.initializer:
        piece = by_official.get(init.name.removeprefix("model."))
        if piece is None:
            size = init.ByteSize()
            if size > _MAX_EMBEDDED_BYTES:
                raise RuntimeError(f"ONNX export: initializer {init.name} ({size} bytes) is no bundle tensor")
            continue
        if list(init.dims) != list(piece.official_shape) or init.data_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"ONNX export: initializer {init.name} has dims {list(init.dims)}, "
                               f"expected float32 {list(piece.official_shape)}")
        entry = header[piece.bundle]
        row_bytes = entry.nbytes // links.shapes[piece.bundle][0]
        init.ClearField("raw_data")
        del init.external_data[:]
        init.data_type = _ONNX_DTYPE[links.dtype]
        init.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", bundle_format.WEIGHTS), ("offset", entry.offset + piece.row * row_bytes),
                           ("length", piece.rows * row_bytes)):
            init.external_data.add(key=key, value=str(value))
        if links.dtype != "fp32":
            stored = f"{init.name}.{links.dtype}"
            casts.append(onnx.helper.make_node("Cast", [stored], [init.name], to=onnx.TensorProto.FLOAT,
                                               name=f"cast_{init.name}"))
            init.name = stored
    for node in reversed(casts):
        proto.graph.node.insert(0, node)
