"""The `lpd-engine` command line: `generate` images and precompute `schedule` files.

    lpd-engine generate --labels 207 360 --steps 20 --cfg 4.8 --seed 0 --out grid.png
    lpd-engine schedule --grid 16 --steps 20 --count 10000 --out res256_steps20.npz
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from .errors import LpdError


def _generate(args) -> None:
    import numpy as np
    from PIL import Image

    from .generator import Generator

    if (args.checkpoint is None) != (args.vq is None):
        raise SystemExit("error: --checkpoint and --vq go together")
    if args.checkpoint and args.bundle:
        raise SystemExit("error: give a bundle or checkpoints, not both")
    if args.precision == "bf16" and args.device != "cuda":
        raise SystemExit("error: --precision bf16 is the GPU's: add --device cuda")
    if args.device == "cuda" and args.backend not in ("auto", "native"):
        raise SystemExit(f"error: --device cuda runs on the native backend, not --backend {args.backend}")
    if args.checkpoint and args.device == "cuda":
        raise SystemExit("error: --device cuda runs a bundle on the native runtime; build one from the checkpoints")
    if args.checkpoint:
        gen = Generator.from_checkpoints(args.checkpoint, args.vq, backend=args.backend)
    else:
        gen = Generator(args.bundle, backend=args.backend, device=args.device, precision=args.precision)
    result = gen.run(args.labels, steps=args.steps, cfg=args.cfg, cfg_schedule=args.cfg_schedule,
                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    pixels = result.pixels
    cols = math.ceil(math.sqrt(len(pixels)))
    rows = math.ceil(len(pixels) / cols)
    h, w = pixels.shape[1:3]
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, p in enumerate(pixels):
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = p
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out)
    if args.each:
        for i, (label, img) in enumerate(zip(args.labels, result.images)):
            img.save(out.with_name(f"{out.stem}_{i:03d}_class{label}.png"))
    t = result.timings
    print(f"{len(pixels)} images ({w}x{h}) -> {out}: {len(result.group_sizes)} steps, cfg {result.params.cfg}, "
          f"tokens {t['tokens_s']:.2f} s, decode {t['decode_s']:.2f} s, total {t['total_s']:.2f} s")


def _schedule(args) -> None:
    from . import schedule

    group_sizes = schedule.published_group_sizes(args.grid, args.steps)
    repulsion = schedule.default_repulsion(args.grid, args.steps) if args.repulsion is None else args.repulsion
    t0 = time.perf_counter()
    orders = schedule.locality_orders(args.grid, group_sizes, args.count, args.seed,
                                      repulsion=repulsion, proximity=args.proximity)
    elapsed = time.perf_counter() - t0
    schedule.save_schedule(args.out, group_sizes, orders, grid=args.grid, seed=args.seed,
                           repulsion=repulsion, proximity=args.proximity, kind="locality")
    print(f"{args.count} orders (grid {args.grid}, {args.steps} steps, repulsion {repulsion}) -> {args.out} "
          f"in {elapsed:.2f} s ({args.count / max(elapsed, 1e-9):.0f} orders/s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lpd-engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate images for class labels")
    g.add_argument("--labels", type=int, nargs="+", required=True, help="class ids, one image each")
    g.add_argument("--steps", type=int, default=None, help="generation steps (default 20)")
    g.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the published one, else 1)")
    g.add_argument("--cfg-schedule", choices=["linear", "constant"], default="linear")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--bundle", help="engine bundle directory (default: the embedded demo bundle)")
    g.add_argument("--checkpoint", help="official LPD checkpoint (.pth), run on the torch reference")
    g.add_argument("--vq", help="LlamaGen VQ checkpoint (.pt), with --checkpoint")
    g.add_argument("--backend", default="auto", choices=["auto", "native", "onnxruntime", "tensorrt", "torch"],
                   help="with a bundle (default auto: native, else onnxruntime, else torch)")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: the native runtime on the GPU (needs a build with the CUDA path)")
    g.add_argument("--precision", choices=["fp32", "bf16"],
                   help="default: the device's (fp32 on cpu, bf16 on cuda); fp32 on cuda gives the CPU's tokens")
    g.add_argument("--out", default="grid.png", help="output grid PNG")
    g.add_argument("--each", action="store_true", help="also write one PNG per image beside the grid")
    g.set_defaults(func=_generate)

    s = sub.add_parser("schedule", help="precompute locality-aware orders into a schedule file")
    s.add_argument("--grid", type=int, required=True, help="token grid side (16 for 256 px, 32 for 512 px)")
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--repulsion", type=float, default=None, help="default: the published threshold")
    s.add_argument("--proximity", type=float, default=1.0)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_schedule)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LpdError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
