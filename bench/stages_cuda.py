"""Where one lpd_l 256/20 step's time goes on the GPU: each kernel of the step timed alone at
the average step shape (batch 1 guided: ~51 rows, ~26 logit rows, 2 sequences; batch 64
guided: ~3280 rows, ~1640 logit rows, 128 sequences; ~150 visible slots; and a late batch-64
step, 40 rows per sequence), random inputs,
GPU time per launch over 200 back-to-back launches, then the per-step sum (24 layers). Prints
a table."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from lpd_engine import _C  # noqa: E402

K = _C.cuda_kernels
D, H, HD, HID, V, L = 1024, 16, 64, 4096, 16384, 24


def t(fn, reps=200):
    """GPU ms per launch of fn, back to back. The launches queue behind a ~25 ms sleep kernel,
    so the host's launch cost (tens of us through pybind, more than a batch-1 kernel takes) is
    hidden; timed one launch at a time, the small kernels measured the host instead."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(50_000_000)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def case(rows, logit_rows, seqs, vis=150, bs=16):
    dev = "cuda"
    x = torch.randn(rows, D, device=dev)
    h = torch.randn(rows, D, device=dev).bfloat16()
    qkv = torch.randn(rows, 3 * D, device=dev).bfloat16()
    mlp = torch.randn(rows, HID, device=dev).bfloat16()
    w = {n: (torch.randn(o, i, device=dev) * 0.02).bfloat16() for n, o, i in
         [("qkv", 3 * D, D), ("proj", D, D), ("fc1", HID, D), ("fc2", D, HID), ("head", V, D)]}
    bqkv, b1 = torch.randn(3 * D, device=dev).bfloat16(), torch.randn(HID, device=dev).bfloat16()
    bd = torch.randn(D, device=dev)
    g, b = torch.ones(D, device=dev), torch.zeros(D, device=dev)
    logits = torch.randn(logit_rows, V, device=dev)
    maxb = (257 + bs - 1) // bs
    kc = torch.randn(seqs * maxb * bs, D, device=dev).bfloat16()
    vc = torch.randn_like(kc)
    tables = torch.arange(seqs * maxb, device=dev, dtype=torch.int32).view(seqs, maxb)
    per = rows // seqs
    row_seq = torch.arange(seqs, dtype=torch.int32).repeat_interleave(per)
    rows_a = len(row_seq)
    visl = torch.full((rows_a,), vis, dtype=torch.int32)
    row_pos = (vis - per + torch.arange(per, dtype=torch.int32)).repeat(seqs)  # the step's positions end at vis
    tile_bytes, tile_rows = K.plan_attention_tiles(row_seq.numpy().tobytes(), row_pos.numpy().tobytes(),
                                                   visl.numpy().tobytes())
    tiles = torch.frombuffer(bytearray(tile_bytes), dtype=torch.int32).to(dev)
    visl = visl.to(dev)
    slots = (row_seq * maxb * bs + row_pos).to(dev)  # each row's position through its block table
    out = torch.empty(rows, D, device=dev).bfloat16()
    import numpy as np
    job = np.zeros(logit_rows // 2, np.dtype([("seed", "<u8"), ("c", "<i4"), ("u", "<i4"), ("w", "<f4"), ("d", "<f4"),
                                              ("gi", "<i4"), ("im", "<i4"), ("k", "<i4"), ("gr", "<i4"), ("o", "<i4"),
                                              ("r", "<i4")]))
    job["c"], job["u"], job["w"], job["d"], job["o"] = np.arange(len(job)), len(job) + np.arange(len(job)), 3.0, 1.0, np.arange(len(job))
    jobs = torch.from_numpy(job.view(np.uint8)).to(dev)
    toks = torch.zeros(len(job), dtype=torch.int32, device=dev)
    gm = lambda a, n, k, ww, bias, c, f32, acc, m=rows: K.gemm(a.data_ptr(), k, ww.data_ptr(), k, bias, c.data_ptr(), n, m, n, k, f32, acc)
    r = {}
    r["layer_norm x2"] = 2 * t(lambda: K.layer_norm(x.data_ptr(), D, 0, g.data_ptr(), b.data_ptr(), 1e-6, h.data_ptr(), D, rows, D))
    r["gemm qkv"] = t(lambda: gm(h, 3 * D, D, w["qkv"], bqkv.data_ptr(), qkv, False, False))
    r["attention + KV write"] = t(lambda: K.paged_attention(
        qkv.data_ptr(), 3 * D, qkv[:, D:].data_ptr(), qkv[:, 2 * D:].data_ptr(), 3 * D, slots.data_ptr(), kc.data_ptr(),
        vc.data_ptr(), tables.data_ptr(), maxb, visl.data_ptr(), tiles.data_ptr(), tiles.numel() // 8, tile_rows, rows_a,
        H, HD, bs, 0.125, out.data_ptr(), D))
    r["gemm proj (+res)"] = t(lambda: gm(out, D, D, w["proj"], bd.data_ptr(), x, True, True))
    r["gemm fc1"] = t(lambda: gm(h, HID, D, w["fc1"], b1.data_ptr(), mlp, False, False))
    r["gelu"] = t(lambda: K.gelu_erf(mlp.data_ptr(), rows * HID))
    r["gemm fc2 (+res)"] = t(lambda: gm(mlp, D, HID, w["fc2"], bd.data_ptr(), x, True, True))
    per_layer = sum(r.values())
    head = t(lambda: gm(h, V, D, w["head"], 0, logits, True, False, m=logit_rows))
    samp = t(lambda: K.sample_tokens(logits.data_ptr(), V, jobs.data_ptr(), len(job), toks.data_ptr()))
    print(f"\n== rows {rows}, logit rows {logit_rows}, seqs {seqs}: ms per launch (x24 per step for layer ops)")
    for k, v in r.items():
        print(f"  {k:18} {v:8.4f}  x24 = {24 * v:7.3f}")
    print(f"  {'head gemm':18} {head:8.4f}\n  {'sampling':18} {samp:8.4f}")
    print(f"  step sum {24 * per_layer + head + samp:.3f} ms; x20 steps = {20 * (24 * per_layer + head + samp):.1f} ms")


case(51, 26, 2)
case(3280, 1640, 128)
case(5120, 2560, 128)  # a late batch-64 step: 40 rows per sequence
