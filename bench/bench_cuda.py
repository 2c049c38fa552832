"""GPU benchmark of the native CUDA path (issue 6): random-weight lpd_l / lpd_xl bundles built
on the device, then tokens-only and end-to-end (labels -> uint8 pixels) generation at 256 px /
20 steps, cfg 4.8 linear, temperature 1, batch 1 and 64: warm-up (first run eager, second
captures the CUDA graphs), median of --repeats runs, GPU memory, JSON out. The VQ decoder runs
in PyTorch (bf16, channels-last) on the GPU: a CUDA VQ decoder is not written yet.

    python bench/bench_cuda.py --models lpd_l --out bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests"), str(ROOT / "export")]

from lpd_engine import _C, schedule  # noqa: E402
from lpd_engine.reference import LPDConfig, VQConfig, build_vq  # noqa: E402

OFFICIAL = {  # lpd-facts.md §6, official code on an H200 (end-to-end ms, images/s)
    ("lpd_l", 1): (228.0, 4.4), ("lpd_l", 64): (408.0, 157.0),
    ("lpd_xl", 1): (347.0, 2.9), ("lpd_xl", 64): (623.0, 103.0),
}


def build(name: str, out: Path) -> Path:
    import build_engine
    from factories import make_lpd_state_dict, make_vq_state_dict

    t = time.perf_counter()
    lpd_sd = {k: v.bfloat16() for k, v in make_lpd_state_dict(LPDConfig.preset(name), seed=0).items()}
    vq_sd = make_vq_state_dict(VQConfig.llamagen_ds16(), seed=1)
    path = build_engine.build_bundle(lpd_sd, vq_sd, out / name, dtype="bf16", steps=[20], orders=4, onnx=False,
                                     progress=False, name=name)
    print(f"built {name} bundle in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), times


def bench_model(name: str, bundle: Path, batches, repeats: int, cfg: float) -> list[dict]:
    from lpd_engine.bundle import open_bundle

    b = open_bundle(bundle)
    config = b.config
    gs = np.asarray(schedule.published_group_sizes(config.grid, 20))
    free0, total = torch.cuda.mem_get_info()
    blocks = 2 * max(batches) * ((config.num_tokens + 1 + 15) // 16)
    engine = _C.Engine(str(bundle), kv_pool_blocks=blocks, device="cuda")
    free1, _ = torch.cuda.mem_get_info()
    vq = build_vq(b.load_state_dicts()[1]).to("cuda").bfloat16().eval().to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True
    rows = []
    for batch in batches:
        orders = schedule.locality_orders(config.grid, gs, batch, 0)
        labels = np.arange(batch) % 1000

        def tokens_only():
            return engine.generate(labels, gs, orders.reshape(-1), cfg, "linear", 1.0, 0, 1.0, 0, False)[0]

        def decode(tokens):
            with torch.no_grad():
                t = torch.from_numpy(tokens).to("cuda", non_blocking=True)
                img = vq.decode_tokens(t) if hasattr(vq, "decode_tokens") else vq.decode_codes(t)
                return ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()

        def end_to_end():
            return decode(tokens_only())

        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            end_to_end()
        tok_ms, tok_all = median_ms(tokens_only, repeats)
        toks = tokens_only()
        dec_ms, _ = median_ms(lambda: decode(toks), repeats)
        e2e_ms, e2e_all = median_ms(end_to_end, repeats)
        free2, _ = torch.cuda.mem_get_info()
        engine_bytes = free0 - free1
        peak = (total - free2) / 2**30
        off = OFFICIAL.get((name, batch))
        row = dict(model=name, res=256, steps=20, batch=batch, cfg=cfg, tokens_ms=round(tok_ms, 3),
                   vq_decode_ms=round(dec_ms, 3), end_to_end_ms=round(e2e_ms, 3),
                   images_per_s=round(batch / e2e_ms * 1e3, 1), tokens_runs_ms=[round(x, 2) for x in tok_all],
                   e2e_runs_ms=[round(x, 2) for x in e2e_all], engine_alloc_gib=round(engine_bytes / 2**30, 2),
                   gpu_used_gib_after=round(peak, 2),
                   torch_peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
        if off:
            row["official_e2e_ms"], row["official_img_s"] = off
            row["speedup_vs_official"] = round(off[0] / e2e_ms, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    del engine
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["lpd_l"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path("/tmp/lpd_bench"))
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    info = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
    rows = []
    for name in a.models:
        cfg = 4.8 if name == "lpd_l" else 4.9
        rows += bench_model(name, build(name, a.work), a.batches, a.repeats, cfg)
    a.out.write_text(json.dumps(dict(info=info, rows=rows), indent=1))
    print(f"\n{info}")
    print(f"{'model':8} {'batch':>5} {'tokens ms':>10} {'vq ms':>8} {'e2e ms':>8} {'img/s':>7} {'x official':>10}")
    for r in rows:
        print(f"{r['model']:8} {r['batch']:5d} {r['tokens_ms']:10.2f} {r['vq_decode_ms']:8.2f} {r['end_to_end_ms']:8.2f} "
              f"{r['images_per_s']:7.1f} {r.get('speedup_vs_official', float('nan')):10.2f}")


if __name__ == "__main__":
    main()
