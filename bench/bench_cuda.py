"""GPU benchmark of the native CUDA path (issue 6): random-weight lpd_l / lpd_xl bundles built
on the device, then tokens only, VQ decode only and end to end (labels -> uint8 pixels on the
host, all inside the engine: tokens and pixels on the GPU) at 256 px / 20 steps and 512 px /
48 steps, cfg 4.8 (lpd_l) / 4.9 (lpd_xl) linear, temperature 1: warm-up (the first run makes
the plans, the second captures the CUDA graphs), median of --repeats runs, the GPU memory the
engine holds, JSON out. official_peer.py times the official code the same way.

    python bench/bench_cuda.py --cases lpd_l:256:20:1,64 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests"), str(ROOT / "export")]

from cases import CASES_HELP, DEFAULT_CASES, median_ms, parse_case  # noqa: E402  (bench/, the script's folder)
from lpd_engine import _C, schedule  # noqa: E402
from lpd_engine.reference import LPDConfig, VQConfig  # noqa: E402

OFFICIAL = {  # lpd-facts.md §6, the official code on an H200: end-to-end ms
    ("lpd_l", 256, 1): 228.0, ("lpd_l", 256, 64): 408.0, ("lpd_xl", 256, 1): 347.0, ("lpd_xl", 256, 64): 623.0,
    ("lpd_l", 512, 1): 621.0, ("lpd_l", 512, 16): 763.0,
}


def build(name: str, res: int, steps: int, out: Path) -> Path:
    import build_engine
    from factories import make_lpd_state_dict, make_vq_state_dict

    t = time.perf_counter()
    config = LPDConfig.preset(name, image_size=res)
    lpd_sd = {k: v.bfloat16() for k, v in make_lpd_state_dict(config, seed=0).items()}
    vq_sd = make_vq_state_dict(VQConfig.llamagen_ds16(), seed=1, with_encoder=False)
    path = build_engine.build_bundle(lpd_sd, vq_sd, out / f"{name}_{res}", dtype="bf16", steps=[steps], orders=4,
                                     onnx=False, progress=False, name=name,
                                     vq_encoder=False)
    print(f"built {name} {res}px bundle in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def bench_case(name: str, res: int, steps: int, bundle: Path, batches, repeats: int, vq_bytes: int) -> list[dict]:
    config = LPDConfig.from_dict(json.loads((bundle / "manifest.json").read_text())["config"])
    gs = np.asarray(schedule.published_group_sizes(config.grid, steps))
    cfg = 4.8 if name == "lpd_l" else 4.9
    torch.cuda.synchronize()
    free0, _ = torch.cuda.mem_get_info()
    blocks = 2 * max(batches) * ((config.num_tokens + 1 + 15) // 16)
    engine = _C.Engine(str(bundle), kv_pool_blocks=blocks, device="cuda", verify_hashes=False,
                       vq_activation_bytes=vq_bytes)
    rows = []
    for batch in batches:
        orders = schedule.locality_orders(config.grid, gs, batch, 0).reshape(-1)
        labels = np.arange(batch) % 1000

        def generate(pixels: bool, labels=labels, orders=orders):
            return engine.generate(labels, gs, orders, cfg, "linear", 1.0, 0, 1.0, 0, pixels)

        for _ in range(3):
            generate(True)
        tok_ms, _ = median_ms(lambda: generate(False), repeats)
        tokens = generate(False)[0]
        dec_ms, _ = median_ms(lambda tokens=tokens: engine.decode(tokens), repeats)
        e2e_ms, e2e_all = median_ms(lambda: generate(True), repeats)
        free1, _ = torch.cuda.mem_get_info()
        row = dict(impl="lpd-engine", model=name, res=res, steps=steps, batch=batch, cfg=cfg, vq_gib=vq_bytes / 2**30,
                   tokens_ms=round(tok_ms, 2), vq_decode_ms=round(dec_ms, 2), end_to_end_ms=round(e2e_ms, 2),
                   images_per_s=round(batch / e2e_ms * 1e3, 1), e2e_runs_ms=[round(x, 2) for x in e2e_all],
                   engine_gib=round((free0 - free1) / 2**30, 2))
        off = OFFICIAL.get((name, res, batch))
        if off:
            row["official_e2e_ms"] = off
            row["speedup_vs_official"] = round(off / e2e_ms, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help=CASES_HELP)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path("/tmp/lpd_bench"))
    p.add_argument("--vq-gib", type=float, default=1.0, help="the engine's VQ activation budget (GiB)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    info = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    rows = []
    for case in a.cases:
        name, res, steps, batches = parse_case(case)
        rows += bench_case(name, res, steps, build(name, res, steps, a.work), batches, a.repeats,
                           int(a.vq_gib * 2**30))
    a.out.write_text(json.dumps(dict(info=info, rows=rows), indent=1))
    print(f"\n{info}")
    print(f"{'model':8} {'res':>4} {'steps':>5} {'batch':>5} {'tokens ms':>10} {'vq ms':>8} {'e2e ms':>8} {'img/s':>7} "
          f"{'GiB':>5} {'x official':>10}")
    for r in rows:
        print(f"{r['model']:8} {r['res']:4d} {r['steps']:5d} {r['batch']:5d} {r['tokens_ms']:10.2f} "
              f"{r['vq_decode_ms']:8.2f} {r['end_to_end_ms']:8.2f} {r['images_per_s']:7.1f} {r['engine_gib']:5.2f} "
              f"{r.get('speedup_vs_official', float('nan')):10.2f}")


if __name__ == "__main__":
    main()
