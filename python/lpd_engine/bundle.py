"""Engine bundles: the on-disk form of one LPD model (docs/bundle.md is the specification).

A bundle is a directory: manifest.json, weights.safetensors (our tensor names, one dtype),
schedules/steps{S}.npz, step.onnx and vq_decoder.onnx (their weights point into
weights.safetensors), optionally tensorrt/*.plan. This module holds the one official <->
bundle naming table, the writing helpers export/build_engine.py uses, and `open_bundle`, which
checks everything it can before anything runs and refuses a bad bundle with a BundleError that
names the file and the problem. Validation reads headers and hashes with the standard library
only; the functions that move tensors import torch and safetensors when called.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendUnavailableError, BundleError, InvalidScheduleError
from .config import LPDConfig, VQConfig

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
GRAPH_FILES = {"step": "step.onnx", "vq_decoder": "vq_decoder.onnx"}
DEMO_BUNDLE = Path(__file__).parent / "data" / "demo_bundle"
BACKENDS = ("torch", "onnxruntime", "tensorrt")

# manifest dtype -> (safetensors dtype, bytes per element); torch and ONNX names are derived where used.
DTYPES = {"fp32": ("F32", 4), "fp16": ("F16", 2), "bf16": ("BF16", 2)}


def schedule_file(steps: int) -> str:
    return f"schedules/steps{steps}.npz"


# ---------------------------------------------------------------------------------------------
# Naming: every bundle tensor is one official tensor, reshaped, or (embed.table) several stacked
# along rows. `layout` is the single table both directions and the ONNX linker read.


@dataclass(frozen=True)
class Piece:
    """Official tensor `official` of `model` ("lpd" or "vq") is rows [row, row + rows) of bundle
    tensor `bundle`, reshaped from `official_shape`."""

    model: str
    official: str
    official_shape: tuple[int, ...]
    bundle: str
    row: int
    rows: int


def layout(config: LPDConfig, vq_config: VQConfig) -> tuple[dict[str, tuple[int, ...]], list[Piece]]:
    """({bundle name: shape}, pieces) of a bundle for these configs, in file order."""
    shapes: dict[str, tuple[int, ...]] = {}
    pieces: list[Piece] = []

    def add(model: str, bundle: str, shape: tuple[int, ...], parts: list[tuple[str, tuple[int, ...]]]) -> None:
        row, row_size = 0, math.prod(shape[1:])
        for name, official_shape in parts:
            rows = math.prod(official_shape) // row_size
            pieces.append(Piece(model, name, official_shape, bundle, row, rows))
            row += rows
        assert row == shape[0], (bundle, shape, parts)
        shapes[bundle] = shape

    d, v, c, n = config.dim, config.vocab_size, config.num_classes, config.num_tokens
    add("lpd", "embed.table", (v + c + 2, d), [("token_emb.weight", (v, d)), ("class_emb.weight", (c, d)),
                                                ("fake_latent", (1, d)), ("mask_token", (1, 1, d))])
    add("lpd", "embed.pos", (n + 1, d), [("pos_embed", (1, n + 1, d))])
    for suffix in ("weight", "bias"):
        add("lpd", f"embed.norm.{suffix}", (d,), [(f"z_proj_ln.{suffix}", (d,))])
    sub = {"attn_norm": ("norm1", (d,)), "qkv": ("attn.qkv", (3 * d, d)), "proj": ("attn.proj", (d, d)),
           "mlp_norm": ("norm2", (d,)), "fc1": ("mlp.fc1", (config.mlp_hidden, d)),
           "fc2": ("mlp.fc2", (d, config.mlp_hidden))}
    for i in range(config.depth):
        for ours, (theirs, weight) in sub.items():
            add("lpd", f"layers.{i}.{ours}.weight", weight, [(f"blocks.{i}.{theirs}.weight", weight)])
            add("lpd", f"layers.{i}.{ours}.bias", weight[:1], [(f"blocks.{i}.{theirs}.bias", weight[:1])])
    for suffix in ("weight", "bias"):
        add("lpd", f"final_norm.{suffix}", (d,), [(f"norm.{suffix}", (d,))])
    add("lpd", "head.weight", (v, d), [("head.weight", (v, d))])
    for name, shape in _vq_official_layout(vq_config).items():
        add("vq", "vq.codebook" if name == "quantize.embedding.weight" else f"vq.{name}", shape, [(name, shape)])
    return shapes, pieces


def _vq_official_layout(vq: VQConfig) -> dict[str, tuple[int, ...]]:
    """LlamaGen VQ tensors used at inference (no quantize.codebook_used), official names."""
    out: dict[str, tuple[int, ...]] = {"quantize.embedding.weight": (vq.codebook_size, vq.codebook_dim)}

    def conv(name, c_out, c_in, k):
        out[f"{name}.weight"], out[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    def norm(name, ch):
        out[f"{name}.weight"], out[f"{name}.bias"] = (ch,), (ch,)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in), conv(f"{name}.conv1", c_out, c_in, 3)
        norm(f"{name}.norm2", c_out), conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_out, c_in, 1)

    def attn(name, ch):
        norm(f"{name}.norm", ch)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", ch, ch, 1)

    def mid(name, ch):
        resnet(f"{name}.mid.0", ch, ch), attn(f"{name}.mid.1", ch), resnet(f"{name}.mid.2", ch, ch)

    widths = [vq.ch * m for m in vq.ch_mult]  # full resolution first
    last = len(widths) - 1
    if vq.has_encoder:
        conv("quant_conv", vq.codebook_dim, vq.z_channels, 1)
    conv("post_quant_conv", vq.z_channels, vq.codebook_dim, 1)
    conv("decoder.conv_in", widths[-1], vq.z_channels, 3)
    mid("decoder", widths[-1])
    c_in = widths[-1]
    for i, width in enumerate(reversed(widths)):  # decoder level 0 is the lowest resolution
        for j in range(vq.decoder_res_blocks):
            resnet(f"decoder.conv_blocks.{i}.res.{j}", c_in if j == 0 else width, width)
            if i == 0:
                attn(f"decoder.conv_blocks.{i}.attn.{j}", width)
        if i < last:
            conv(f"decoder.conv_blocks.{i}.upsample.conv", width, width, 3)
        c_in = width
    norm("decoder.norm_out", widths[0])
    conv("decoder.conv_out", 3, widths[0], 3)
    if vq.has_encoder:
        conv("encoder.conv_in", vq.ch, 3, 3)
        c_in = vq.ch
        for i, width in enumerate(widths):
            for j in range(vq.encoder_res_blocks):
                resnet(f"encoder.conv_blocks.{i}.res.{j}", c_in if j == 0 else width, width)
                if i == last:
                    attn(f"encoder.conv_blocks.{i}.attn.{j}", width)
            if i < last:
                conv(f"encoder.conv_blocks.{i}.downsample.conv", width, width, 3)
            c_in = width
        mid("encoder", widths[-1])
        norm("encoder.norm_out", widths[-1])
        conv("encoder.conv_out", vq.z_channels, widths[-1], 3)
    return out


def to_bundle_tensors(lpd_sd, vq_sd, config: LPDConfig, vq_config: VQConfig, dtype: str) -> dict:
    """Official state dicts (torch tensors) -> {bundle name: contiguous tensor of `dtype`}."""
    import torch

    shapes, pieces = layout(config, vq_config)
    parts: dict[str, list] = {name: [] for name in shapes}
    for p in pieces:
        sd = lpd_sd if p.model == "lpd" else vq_sd
        parts[p.bundle].append(sd[p.official].reshape(p.rows, *shapes[p.bundle][1:]))
    target = torch_dtype(dtype)
    return {name: torch.cat(ts).reshape(shapes[name]).to(target).contiguous() for name, ts in parts.items()}


def from_bundle_tensors(tensors, config: LPDConfig, vq_config: VQConfig) -> tuple[dict, dict]:
    """{bundle name: tensor} -> (official LPD state dict, official VQ state dict), float32."""
    import torch

    out = {"lpd": {}, "vq": {}}
    for p in layout(config, vq_config)[1]:
        t = tensors[p.bundle][p.row : p.row + p.rows].reshape(p.official_shape)
        out[p.model][p.official] = t.to(torch.float32)
    return out["lpd"], out["vq"]


def torch_dtype(dtype: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


# ---------------------------------------------------------------------------------------------
# Files: hashing, the safetensors header, graph metadata.


def file_entry(path: Path) -> dict:
    """{"size": bytes, "sha256": hex} of a file, for the manifest."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    nbytes: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a safetensors file's header (no tensor data is read); BundleError if malformed.

    Checks that every tensor's bytes lie inside the file, match its dtype and shape, and that
    the data region is exactly covered, so a truncated or padded file is refused.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BundleError(f"{path}: truncated ({size} bytes): no safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise BundleError(f"{path}: truncated: header of {length} bytes in a {size}-byte file")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise BundleError(f"{path}: the safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    start, entries, covered = 8 + length, {}, []
    itemsize = {st: n for st, n in DTYPES.values()}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{path}: malformed header entry for tensor {name!r}") from None
        nbytes = math.prod(shape) * itemsize.get(dtype, 0)
        if dtype not in itemsize or end - begin != nbytes or begin < 0:
            raise BundleError(f"{path}: tensor {name!r} has dtype {dtype}, shape {list(shape)} and "
                              f"{end - begin} bytes; expected one of {sorted(itemsize)} with matching size")
        entries[name] = TensorEntry(dtype, shape, start + begin, nbytes)
        covered.append((begin, end))
    covered.sort()
    expected_end = 0
    for begin, end in covered:
        if begin != expected_end:
            raise BundleError(f"{path}: tensor data overlaps or leaves a gap at byte {start + begin}")
        expected_end = end
    if start + expected_end != size:
        raise BundleError(f"{path}: {size} bytes, but its header describes {start + expected_end} "
                          f"({'truncated' if size < start + expected_end else 'trailing bytes'})")
    return entries


def graph_metadata(graph: str, config: LPDConfig, vq_config: VQConfig, dtype: str, weights_sha256: str) -> dict:
    """The metadata_props an ONNX graph of a bundle carries and a loader compares."""
    return {"lpd.graph": graph, "lpd.format_version": str(FORMAT_VERSION), "lpd.dtype": dtype,
            "lpd.config": json.dumps(config.to_dict(), sort_keys=True),
            "lpd.vq_config": json.dumps(vq_config.to_dict(), sort_keys=True),
            "lpd.weights_sha256": weights_sha256}


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """Add sha256 and size of every file the manifest names, then write manifest.json."""
    named = [WEIGHTS] + [g["file"] for g in manifest.get("graphs", {}).values()]
    named += [s["file"] for s in manifest.get("schedules", {}).values()]
    if "tensorrt" in manifest:
        named += [p["file"] for p in manifest["tensorrt"]["plans"].values()] + [manifest["tensorrt"]["timing_cache"]]
    manifest = {**manifest, "files": {name: file_entry(out_dir / name) for name in named}}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Loading.


class Bundle:
    """A validated bundle. Open with `open_bundle(path)`."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.config = LPDConfig.from_dict(manifest["config"])
        self.vq_config = VQConfig.from_dict(manifest["vq_config"])
        self.name: str = manifest["name"]
        self.image_size: int = manifest["image_size"]
        self.dtype: str = manifest["dtype"]
        self.default_cfg: dict[int, float] = {int(s): float(w) for s, w in manifest["default_cfg"].items()}
        self._schedules: dict = {}

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, name={self.name!r}, image_size={self.image_size}, dtype={self.dtype!r})"

    @property
    def schedule_steps(self) -> list[int]:
        """Step counts with precomputed orders in this bundle."""
        return sorted(int(s) for s in self.manifest["schedules"])

    @property
    def weights_sha256(self) -> str:
        return self.manifest["files"][WEIGHTS]["sha256"]

    def file(self, name: str) -> Path:
        return self.path / name

    def graph_path(self, graph: str) -> Path:
        """Path of the ONNX graph "step" or "vq_decoder"; BundleError if the bundle has none."""
        entry = self.manifest["graphs"].get(graph)
        if entry is None:
            raise BundleError(f"{self.path / MANIFEST}: this bundle has no {graph!r} ONNX graph "
                              "(built with --no-onnx?)")
        return self.path / entry["file"]

    def schedule(self, steps: int):
        """The precomputed schedule for `steps` (a lpd_engine.schedule.Schedule), or None."""
        from . import schedule as sched

        entry = self.manifest["schedules"].get(str(steps))
        if entry is None:
            return None
        if steps not in self._schedules:
            path = self.path / entry["file"]
            try:
                s = sched.load_schedule(path)
            except InvalidScheduleError as e:
                raise BundleError(f"{path}: {e}") from None
            n = self.config.num_tokens
            if len(s.group_sizes) != steps or s.orders.shape != (entry["count"], n):
                raise BundleError(f"{path}: holds {len(s.group_sizes)} steps and orders {list(s.orders.shape)}; "
                                  f"the manifest says {steps} steps and [{entry['count']}, {n}]")
            self._schedules[steps] = s
        return self._schedules[steps]

    def check_graph(self, graph: str, metadata: dict) -> None:
        """BundleError unless an ONNX graph's metadata_props match this bundle's weights and configs."""
        expected = graph_metadata(graph, self.config, self.vq_config, self.dtype, self.weights_sha256)
        wrong = sorted(k for k, v in expected.items() if metadata.get(k) != v)
        if wrong:
            raise BundleError(f"{self.graph_path(graph)}: does not match this bundle's weights and config "
                              f"(metadata {', '.join(wrong)} differ{'s' if len(wrong) == 1 else ''}); rebuild the bundle")

    def load_state_dicts(self) -> tuple[dict, dict]:
        """(official LPD state dict, official VQ state dict) as float32 torch tensors."""
        from safetensors.torch import load_file

        return from_bundle_tensors(load_file(self.path / WEIGHTS), self.config, self.vq_config)

    def reference_models(self):
        """(LPDTransformer, VQModel) in float32 on the CPU, eval mode, with this bundle's weights."""
        import torch

        from .reference import LPDTransformer, VQModel

        lpd_sd, vq_sd = self.load_state_dicts()
        with torch.device("meta"):
            model, vq = LPDTransformer(self.config), VQModel(self.vq_config)
        model = model.to_empty(device="cpu")
        model.load_state_dict(lpd_sd, strict=True)
        vq = vq.to_empty(device="cpu")
        result = vq.load_state_dict(vq_sd, strict=False)
        # The one tensor a bundle leaves out: the training-time usage counter, unused at inference.
        assert result.missing_keys == ["quantize.codebook_used"] and not result.unexpected_keys, result
        vq.quantize.codebook_used.zero_()
        return model.eval(), vq.eval()

    def make_backend(self, name: str):
        """A driver backend ("torch", "onnxruntime" or "tensorrt") over this bundle.

        Raises BackendUnavailableError when the backend's package is not installed here.
        """
        if name == "torch":
            try:
                from .backends.torch_backend import TorchBackend
                import safetensors  # noqa: F401
            except ImportError as e:
                raise BackendUnavailableError(f"the torch backend needs torch and safetensors: {e}") from None
            return TorchBackend(*self.reference_models())
        if name == "onnxruntime":
            from .backends.onnxruntime_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend(self)
        if name == "tensorrt":
            from .backends.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(self)
        raise ValueError(f"unknown backend {name!r}; bundles support {BACKENDS}")


def open_bundle(path) -> Bundle:
    """Open and validate a bundle directory (manifest, file sizes and sha256, weight layout).

    Raises BundleError naming the file and the problem. Schedules are read on demand.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; {path} is not an engine bundle")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    _check_manifest(manifest, manifest_path)
    bundle = Bundle(path, manifest)
    for name, entry in manifest["files"].items():
        _check_file(path, name, entry)
    _check_weights(bundle)
    return bundle


def _check_manifest(m, where: Path) -> None:
    if not isinstance(m, dict) or not isinstance(m.get("format_version"), int):
        raise BundleError(f"{where}: no integer format_version")
    if m["format_version"] > FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {m['format_version']} is newer than this lpd-engine reads "
                          f"({FORMAT_VERSION}); upgrade lpd-engine")
    if m["format_version"] < 1:
        raise BundleError(f"{where}: invalid format_version {m['format_version']}")
    fields = {"name": str, "image_size": int, "dtype": str, "config": dict, "vq_config": dict,
              "default_cfg": dict, "schedules": dict, "graphs": dict, "files": dict}
    for key, kind in fields.items():
        if not isinstance(m.get(key), kind):
            raise BundleError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    if m["dtype"] not in DTYPES:
        raise BundleError(f"{where}: dtype {m['dtype']!r} is not one of {sorted(DTYPES)}")
    try:
        config, vq = LPDConfig.from_dict(m["config"]), VQConfig.from_dict(m["vq_config"])
        default_cfg = {int(s): float(w) for s, w in m["default_cfg"].items()}
    except (TypeError, ValueError) as e:
        raise BundleError(f"{where}: bad model description: {e}") from None
    if m["image_size"] != config.grid * vq.downsample:
        raise BundleError(f"{where}: image_size {m['image_size']} != grid {config.grid} x VQ downsample {vq.downsample}")
    if any(w < 0 for w in default_cfg.values()):
        raise BundleError(f"{where}: negative guidance in default_cfg")
    files = m["files"]
    if WEIGHTS not in files:
        raise BundleError(f"{where}: lists no {WEIGHTS}")
    named = [("schedule", s) for s in m["schedules"].values()] + [("graph", g) for g in m["graphs"].values()]
    for kind, entry in named:
        if not isinstance(entry, dict) or entry.get("file") not in files:
            raise BundleError(f"{where}: a {kind} entry {entry!r} names no file listed under 'files'")
    for steps, entry in m["schedules"].items():
        if not steps.isdigit() or not isinstance(entry.get("count"), int):
            raise BundleError(f"{where}: schedule entry {steps!r}: {entry!r} needs integer steps and count")
    for name, entry in files.items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("sha256"), str) or ".." in Path(name).parts or Path(name).is_absolute()):
            raise BundleError(f"{where}: bad file entry {name!r}: {entry!r}")


def _check_file(root: Path, name: str, entry: dict) -> None:
    path = root / name
    if not path.is_file():
        raise BundleError(f"{path}: missing (listed in {MANIFEST})")
    size = path.stat().st_size
    if size != entry["size"]:
        what = "truncated" if size < entry["size"] else "longer than recorded"
        raise BundleError(f"{path}: {what}: {size} bytes, {MANIFEST} says {entry['size']}")
    if file_entry(path)["sha256"] != entry["sha256"]:
        raise BundleError(f"{path}: sha256 mismatch (corrupt or modified since the bundle was built)")


def _check_weights(bundle: Bundle) -> None:
    path = bundle.path / WEIGHTS
    found = read_safetensors_header(path)
    expected, _ = layout(bundle.config, bundle.vq_config)
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or extra:
        raise BundleError(f"{path}: missing tensors {missing[:8]}, unexpected tensors {extra[:8]}")
    st_dtype = DTYPES[bundle.dtype][0]
    for name, shape in expected.items():
        if found[name].shape != shape or found[name].dtype != st_dtype:
            raise BundleError(f"{path}: tensor {name!r} is {found[name].dtype} {list(found[name].shape)}, "
                              f"expected {st_dtype} {list(shape)}")
