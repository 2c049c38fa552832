"""Build an engine bundle from an official LPD checkpoint and a LlamaGen VQ tokenizer.

    python export/build_engine.py --checkpoint lpd_l_256.pth --vq vq_ds16_c2i.pt --out bundles/lpd_l_256 \
        --dtype bf16
    python export/build_engine.py          # the embedded demo bundle (lpd_engine.bundle.DEMO_BUNDLE)
                                           # from examples/train_mnist/checkpoints

Stages: read and check the checkpoints, write weights.safetensors, precompute locality orders
for every published step count of the model's grid, export the ONNX graphs (pointing into the
weights), optionally build TensorRT plans, then write manifest.json with the sha256 of every
file. The bundle is built in a sibling ".partial" directory and moved into place at the end, so
a failed build never leaves a half-written bundle behind. docs/bundle.md describes the result.
`build_bundle` is the same build as a function (tests import it: this folder is not a package).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lpd_engine import __version__, bundle as bf, schedule
from lpd_engine.defaults import preset_name, published_cfg_for
from lpd_engine.errors import InvalidScheduleError, LpdError
from lpd_engine.reference import build_lpd, build_vq, load_lpd_state_dict, load_vq_state_dict

DEFAULT_OUT = bf.DEMO_BUNDLE
# The embedded demo: the MNIST pair trained by examples/train_mnist/train.py, decoder-only VQ,
# guidance 3.0 (the classifier accuracy of its generations levels off there: train_mnist/README.md).
DEMO_CHECKPOINTS = Path(__file__).resolve().parents[1] / "examples" / "train_mnist" / "checkpoints"
DEMO_NAME, DEMO_CFG = "lpd_mnist", 3.0


def build_bundle(lpd_ckpt, vq_ckpt, out_dir, dtype: str = "fp32", steps=None, orders: int = 1000, seed: int = 0,
                 heads: int | None = None, onnx: bool = True, tensorrt: bool = False, progress: bool = True,
                 name: str | None = None, cfg: float | None = None, vq_encoder: bool = True) -> Path:
    """Build a bundle into out_dir (replacing what is there) and return its path.

    lpd_ckpt, vq_ckpt: paths, {"model": state_dict} dicts or bare state dicts (official layouts).
    steps: step counts to precompute orders for (default: every published count for the grid;
    none for grids without published group sizes). orders: orders per step count. name: the
    model's name in the manifest (default: its preset name, lpd_l / lpd_xl / lpd_xxl, or "lpd").
    cfg: the default guidance scale recorded for every precomputed step count, for models
    without published settings (default: the published values, none for other models).
    vq_encoder: keep the VQ encoder (False: decoder only, all that generation needs).
    progress: a progress bar over the stages and a summary at the end.
    """
    if dtype not in bf.DTYPES:
        raise ValueError(f"dtype must be one of {sorted(bf.DTYPES)}, got {dtype!r}")
    if tensorrt:
        import tensorrt_plans  # raises BackendUnavailableError here, before any work, when TensorRT is missing

        tensorrt_plans.require_tensorrt()
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "schedules").mkdir(parents=True)
    stages = ["checkpoints", "weights", "schedules"] + ["onnx"] * onnx + ["tensorrt"] * tensorrt + ["manifest"]
    seconds: dict[str, float] = {}
    bar = tqdm(stages, desc="build", disable=not progress, leave=False)

    def stage(label: str):
        bar.set_postfix_str(label)
        seconds[label] = time.perf_counter()

    def done(label: str):
        seconds[label] = time.perf_counter() - seconds[label]
        bar.update()

    stage("checkpoints")
    model = build_lpd(load_lpd_state_dict(lpd_ckpt), heads=heads)
    vq_sd = load_vq_state_dict(vq_ckpt)
    if not vq_encoder:
        vq_sd = {k: v for k, v in vq_sd.items() if not k.startswith(("encoder.", "quant_conv."))}
    vq = build_vq(vq_sd)
    config, vq_config = model.config, vq.config
    image_size = config.grid * vq_config.downsample
    preset = preset_name(config)
    done("checkpoints")

    stage("weights")
    from safetensors.torch import save_file

    with torch.no_grad():
        tensors = bf.to_bundle_tensors(model.state_dict(), vq.state_dict(), config, vq_config, dtype)
    save_file(tensors, work / bf.WEIGHTS)
    del tensors
    weights_sha256 = bf.file_entry(work / bf.WEIGHTS)["sha256"]
    done("weights")

    stage("schedules")
    if steps is None:
        try:
            steps = schedule.published_steps(config.grid)
        except InvalidScheduleError:  # a grid without published group sizes: orders are made per request
            steps = []
    schedules = {}
    for s in sorted(set(int(s) for s in steps)):
        sizes = schedule.published_group_sizes(config.grid, s)
        repulsion = schedule.default_repulsion(config.grid, s)
        proximity = 1.0
        order_array = schedule.locality_orders(config.grid, sizes, orders, seed, repulsion=repulsion,
                                               proximity=proximity)
        schedule.save_schedule(work / bf.schedule_file(s), sizes, order_array, grid=config.grid, seed=seed,
                               repulsion=repulsion, proximity=proximity, kind="locality")
        schedules[str(s)] = {"file": bf.schedule_file(s), "count": orders, "repulsion": repulsion,
                             "proximity": proximity, "seed": seed}
    done("schedules")

    graphs = {}
    if onnx:
        stage("onnx")
        import onnx_graphs

        graphs = onnx_graphs.export_graphs(work, model, vq, dtype, weights_sha256)
        done("onnx")

    manifest = {
        "format_version": bf.FORMAT_VERSION,
        "name": name or preset or "lpd",
        "image_size": image_size,
        "dtype": dtype,
        "config": config.to_dict(),
        "vq_config": vq_config.to_dict(),
        "default_cfg": ({s: float(cfg) for s in schedules} if cfg is not None else
                        {str(s): w for s, w in sorted(published_cfg_for(preset, image_size).items())} if preset else {}),
        "schedules": schedules,
        "graphs": graphs,
        "created_by": f"lpd-engine {__version__} export/build_engine.py",
    }
    if tensorrt:
        stage("tensorrt")
        import tensorrt_plans

        manifest["tensorrt"] = tensorrt_plans.build_plans(work, config, schedules)
        done("tensorrt")

    stage("manifest")
    bf.write_manifest(work, manifest)
    bf.open_bundle(work)  # everything written must pass the loader's checks
    done("manifest")
    bar.close()

    if out_dir.exists():
        shutil.rmtree(out_dir)
    work.rename(out_dir)
    if progress:
        print(summary(out_dir, seconds))
    return out_dir


def summary(out_dir: Path, seconds: dict[str, float]) -> str:
    """A one-screen report of a freshly built bundle."""
    b = bf.open_bundle(out_dir)
    m, c, q = b.manifest, b.config, b.vq_config
    files = m["files"]
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    total = sum(f["size"] for f in files.values())
    sched = m["schedules"]
    lines = [
        f"bundle     {out_dir}  (format {m['format_version']}, {m['dtype']})",
        f"model      {m['name']}: D {c.dim}, depth {c.depth}, heads {c.heads}, vocab {c.vocab_size}, "
        f"{c.num_classes} classes, {c.grid}x{c.grid} tokens -> {b.image_size} px",
        f"vq         codebook {q.codebook_size}x{q.codebook_dim}, ch {q.ch} x {list(q.ch_mult)}, "
        f"encoder {'yes' if q.has_encoder else 'no'}",
        f"weights    {len(bf.layout(c, q)[0])} tensors, {mb(files[bf.WEIGHTS]['size'])}",
    ]
    if m["graphs"]:
        sizes = ", ".join(f"{g['file']} {mb(files[g['file']]['size'])}" for g in m["graphs"].values())
        lines.append(f"onnx       {sizes}; weights external (byte ranges of {bf.WEIGHTS}), float32 compute")
    else:
        lines.append("onnx       none (--no-onnx)")
    if sched:
        counts = sorted(int(s) for s in sched)
        sched_bytes = sum(files[e["file"]]["size"] for e in sched.values())
        lines.append(f"schedules  steps {' '.join(map(str, counts))}; {sched[str(counts[0])]['count']} orders each, "
                     f"seed {sched[str(counts[0])]['seed']}, {mb(sched_bytes)}")
    else:
        lines.append(f"schedules  none (no published group sizes for grid {c.grid})")
    if "tensorrt" in m:
        lines.append(f"tensorrt   {', '.join(p['file'] for p in m['tensorrt']['plans'].values())}")
    cfg = ", ".join(f"{s} steps: {w}" for s, w in sorted(b.default_cfg.items())) or "none published"
    lines.append(f"guidance   {cfg}")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    lines.append(f"total      {mb(total)} in {sum(seconds.values()):.1f} s ({timing})")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="official LPD checkpoint (.pth); default: the MNIST demo pair")
    p.add_argument("--vq", help="LlamaGen VQ tokenizer checkpoint (.pt)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"bundle directory (default {DEFAULT_OUT})")
    p.add_argument("--dtype", choices=sorted(bf.DTYPES), default="fp32", help="stored weight dtype")
    p.add_argument("--steps", type=int, nargs="+", help="step counts to precompute orders for "
                   "(default: all published for the grid)")
    p.add_argument("--orders", type=int, default=1000, help="orders per step count (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the precomputed orders")
    p.add_argument("--heads", type=int, help="attention heads (default: dim / 64)")
    p.add_argument("--name", help="model name in the manifest (default: lpd_l / lpd_xl / lpd_xxl by shape)")
    p.add_argument("--cfg", type=float, help="default guidance scale for every step count (models without "
                   "published settings)")
    p.add_argument("--no-vq-encoder", dest="vq_encoder", action="store_false",
                   help="leave the VQ encoder out (generation needs only the decoder)")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX graphs")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT plans (needs TensorRT)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) != (args.vq is None):
        p.error("--checkpoint and --vq go together")
    lpd_ckpt, vq_ckpt, name, cfg, vq_encoder = args.checkpoint, args.vq, args.name, args.cfg, args.vq_encoder
    if lpd_ckpt is None:
        lpd_ckpt, vq_ckpt = DEMO_CHECKPOINTS / "lpd_mnist.pth", DEMO_CHECKPOINTS / "vq_mnist.pt"
        name, cfg, vq_encoder = name or DEMO_NAME, DEMO_CFG if cfg is None else cfg, False
    try:
        build_bundle(lpd_ckpt, vq_ckpt, args.out, dtype=args.dtype, steps=args.steps, orders=args.orders,
                     seed=args.seed, heads=args.heads, onnx=args.onnx, tensorrt=args.tensorrt, name=name,
                     cfg=cfg, vq_encoder=vq_encoder)
    except LpdError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
