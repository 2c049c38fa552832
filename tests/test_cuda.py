"""The CUDA path on the GPU: every kernel against a float64 reference on fresh random inputs
with odd sizes and NaN-poisoned outputs, in bf16 and (where the launcher takes a dtype) in
float32, each within GPU_ERROR_RATIO times the error of the same-precision torch computation;
then the GPU step decoder end to end (bf16: logits against the bf16 torch reference, per-step
greedy tokens against the CPU path; float32: greedy tokens against the CPU path) and the GPU VQ
decoder (pixels against the float64 reference and the CPU decoder). Skips, saying why, where torch
has no GPU or lpd_engine._C was built without the CUDA path."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import GPU_ERROR_RATIO, GPU_LOGITS_RTOL, GPU_TOKEN_AGREEMENT  # noqa: E402

try:
    from lpd_engine import _C
except ImportError:  # pragma: no cover
    _C = None

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to torch", allow_module_level=True)
if _C is None or not hasattr(_C, "cuda_kernels"):
    pytest.skip("lpd_engine._C was built without the CUDA path (no nvcc/cuBLASLt at build time)",
                allow_module_level=True)

K = _C.cuda_kernels
DEV = "cuda"


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def poisoned(*shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


def ok(status):
    assert status == "ok", status
    torch.cuda.synchronize()


DTYPES = [torch.bfloat16, torch.float32]


def bits(t):
    """The raw bits of a tensor, so that NaN poison compares equal to itself."""
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,dim", [(7, 1037), (33, 64), (1, 1280), (300, 1024)])  # block / warp paths
def test_layer_norm(rows, dim, dtype):
    g = torch.Generator(device=DEV).manual_seed(rows * dim)
    x = torch.randn(rows + 3, dim, device=DEV, generator=g) * 3 + 1
    gamma, beta = torch.randn(dim, device=DEV, generator=g), torch.randn(dim, device=DEV, generator=g)
    idx = torch.randperm(rows + 3, device=DEV, generator=g)[:rows].to(torch.int32)
    out = poisoned(rows, dim, dtype=dtype)
    ok(K.layer_norm(x.data_ptr(), dim, idx.data_ptr(), gamma.data_ptr(), beta.data_ptr(), 1e-6, out.data_ptr(), dim,
                    rows, dim, f32=dtype == torch.float32))
    ref = torch.nn.functional.layer_norm(x[idx.long()].double(), (dim,), gamma.double(), beta.double(), 1e-6)
    same = torch.nn.functional.layer_norm(x[idx.long()], (dim,), gamma, beta, 1e-6).to(dtype)
    assert not out.isnan().any()
    assert rel(out, ref) <= GPU_ERROR_RATIO * rel(same, ref) + 1e-6


@pytest.mark.parametrize("n,dtype", [(100_003, torch.bfloat16), (8 * 12_345, torch.bfloat16),  # scalar / 16-byte
                                     (100_003, torch.float32)])
def test_gelu(n, dtype):
    x = (torch.randn(n, device=DEV) * 4).to(dtype)
    y = x.clone()
    ok(K.gelu_erf(y.data_ptr(), y.numel(), f32=dtype == torch.float32))
    ref = torch.nn.functional.gelu(x.double())
    same = torch.nn.functional.gelu(x.float()).to(dtype)
    assert rel(y, ref) <= GPU_ERROR_RATIO * rel(same, ref) + 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_embed_rows_with_device_tokens(dtype):
    rows, dim, table_rows, pos_rows = 19, 200, 50, 17
    g = torch.Generator(device=DEV).manual_seed(1)
    table = torch.randn(table_rows, dim, device=DEV, generator=g).to(dtype)
    pos = torch.randn(pos_rows, dim, device=DEV, generator=g).to(dtype)
    gamma, beta = torch.randn(dim, device=DEV, generator=g), torch.randn(dim, device=DEV, generator=g)
    tokens = torch.randint(0, table_rows, (11,), device=DEV, generator=g, dtype=torch.int32)
    ids = torch.randint(0, table_rows, (rows,), device=DEV, generator=g, dtype=torch.int32)
    ids[::3] = -(1 + torch.randint(0, 11, (len(ids[::3]),), device=DEV, generator=g, dtype=torch.int32))
    pos_ids = torch.randint(0, pos_rows, (rows,), device=DEV, generator=g, dtype=torch.int32)
    out = poisoned(rows, dim, dtype=torch.float32)
    ok(K.embed_rows(table.data_ptr(), pos.data_ptr(), gamma.data_ptr(), beta.data_ptr(), 1e-6, ids.data_ptr(),
                    pos_ids.data_ptr(), tokens.data_ptr(), rows, dim, table_rows, pos_rows, out.data_ptr(),
                    f32=dtype == torch.float32))
    resolved = torch.where(ids < 0, tokens[(-ids - 1).clamp(min=0).long()], ids).long()
    ref = torch.nn.functional.layer_norm(table[resolved].double() + pos[pos_ids.long()].double(), (dim,),
                                         gamma.double(), beta.double(), 1e-6)
    assert rel(out, ref) < 1e-5


def _attention_case(heads, head_dim, block_size, seq_rows, seed, max_len=70, dtype=torch.bfloat16):
    """A random paged cache and one step's rows: sequence s's rows hold the consecutive
    positions cached_s .. cached_s + n_s - 1 (the cache holds the positions below), their K/V
    are in the qkv rows, and each row sees positions [0, vis), itself included:
    pos < vis <= cached_s + n_s.
    Returns (inputs, float64 reference, same-precision torch output)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    width = heads * head_dim
    num_seqs = len(seq_rows)
    max_blocks = (max_len + block_size - 1) // block_size
    num_blocks = num_seqs * max_blocks + 3
    k = torch.randn(num_blocks * block_size, width, device=DEV, generator=g).to(dtype)
    v = torch.randn(num_blocks * block_size, width, device=DEV, generator=g).to(dtype)
    tables = torch.randperm(num_blocks, device=DEV, generator=g)[: num_seqs * max_blocks].view(num_seqs, max_blocks)
    qkv = torch.randn(sum(seq_rows), 3 * width, device=DEV, generator=g).to(dtype)  # q | k_new | v_new
    cached = [int(torch.randint(0, max_len - n + 1, (1,), device=DEV, generator=g)) for n in seq_rows]
    row_seq, row_pos, vis, slots, firsts = [], [], [], [], []
    for s, (n, c) in enumerate(zip(seq_rows, cached)):
        firsts.append(len(row_seq))
        for pos in range(c, c + n):
            row_seq.append(s)
            row_pos.append(pos)
            vis.append(pos + 1 + int(torch.randint(0, c + n - pos, (1,), device=DEV, generator=g)))
            slots.append(int(tables[s, pos // block_size]) * block_size + pos % block_size)
    rows = len(row_seq)
    slots[rows // 2] = -1  # a row whose K/V is not kept (still seen by its sequence this step)
    scale = head_dim ** -0.5
    ref = torch.empty(rows, width, dtype=torch.float64, device=DEV)
    same = torch.empty(rows, width, dtype=dtype, device=DEV)
    for r in range(rows):
        s, n = row_seq[r], vis[r]
        phys = (tables[s].repeat_interleave(block_size) * block_size +
                torch.arange(block_size, device=DEV).repeat(max_blocks))[:n]
        fresh = torch.arange(firsts[s], firsts[s] + max(n - cached[s], 0), device=DEV)
        kr = torch.cat([k[phys[:cached[s]]], qkv[fresh, width:2 * width]])
        vr = torch.cat([v[phys[:cached[s]]], qkv[fresh, 2 * width:]])
        qr = qkv[r, :width].view(heads, 1, head_dim)
        kr, vr = kr.view(n, heads, head_dim).transpose(0, 1), vr.view(n, heads, head_dim).transpose(0, 1)
        p = torch.softmax(qr.double() @ kr.double().transpose(1, 2) * scale, dim=-1)
        ref[r] = (p @ vr.double()).reshape(width)
        ps = torch.softmax((qr @ kr.transpose(1, 2)).float() * scale, dim=-1).to(dtype)
        same[r] = (ps @ vr).reshape(width)
    # the step's own positions are poisoned in the cache: they must come from the qkv rows
    step_slots = torch.tensor([int(tables[s, p // block_size]) * block_size + p % block_size
                               for s, p in zip(row_seq, row_pos)], device=DEV)
    k[step_slots], v[step_slots] = float("nan"), float("nan")
    i32 = lambda x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    return dict(qkv=qkv, k=k, v=v, tables=tables.to(torch.int32).contiguous(), row_seq=i32(row_seq),
                row_pos=i32(row_pos), vis=i32(vis).to(DEV), slots=i32(slots).to(DEV), rows=rows,
                max_blocks=max_blocks, scale=scale, cached=cached, firsts=firsts), ref, same


def _plan_tiles(case):
    return K.plan_attention_tiles(case["row_seq"].numpy().tobytes(), case["row_pos"].numpy().tobytes(),
                                  case["vis"].cpu().numpy().tobytes())


# head_dim 64 runs on tensor cores (tiles of 32 rows when no sequence has more, else 64; one
# 16-row mma tile per warp); with few tiles x heads the slots are split across the blocks of a
# cluster (merged through its shared memory); 40 and 96 take the CUDA-core path. Every case also
# checks the step's K/V written to the cache, and that the kernel read them from the qkv rows.
# float32 (the engine's float32 mode) always takes the CUDA-core path.
@pytest.mark.parametrize("heads,head_dim,block_size,seq_rows,max_len,dtype", [(*c, torch.bfloat16) for c in [
    (3, 64, 16, [1, 19, 7], 70),
    (2, 40, 5, [17, 2], 70),
    (1, 96, 16, [5], 70),
    (4, 64, 7, [33], 70),
    (2, 64, 16, [3, 16, 40], 700),
    (1, 64, 5, [1], 700),
    (16, 64, 16, [16, 33, 5, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 11], 300),
    (16, 64, 16, [25] * 20, 300),     # 32-row tiles, no split (a batch-64 step's shape)
    (2, 64, 16, [64, 65, 130], 300),  # full 64-row tiles, a 1-row tile, warps without rows
    (1, 64, 16, [100], 1100),         # 64-row tiles split over the slots
    (2, 40, 16, [70, 9], 100),        # CUDA-core path over the 16-row sub-tiles of 64-row tiles
]] + [(3, 64, 16, [1, 19, 7], 70, torch.float32), (2, 64, 16, [64, 65, 130], 300, torch.float32),
      (2, 40, 5, [17, 2], 70, torch.float32)])
def test_paged_attention(heads, head_dim, block_size, seq_rows, max_len, dtype):
    case, ref, same = _attention_case(heads, head_dim, block_size, seq_rows, seed=heads * 100 + head_dim + max_len,
                                      max_len=max_len, dtype=dtype)
    width = heads * head_dim
    tile_bytes, tile_rows = _plan_tiles(case)
    assert tile_rows == (32 if max(seq_rows) <= 32 else 64)
    expect, first, vis = [], 0, case["vis"].tolist()
    for s, n in enumerate(seq_rows):
        for r in range(first, first + n, tile_rows):
            e = min(r + tile_rows, first + n)
            expect += [r, e - r, s, max(vis[r:e]), case["cached"][s], first, 0, 0]
        first += n
    assert list(memoryview(tile_bytes).cast("i")) == expect
    tiles = torch.frombuffer(bytearray(tile_bytes), dtype=torch.int32).to(DEV)
    k0, v0 = case["k"].clone(), case["v"].clone()

    def attend():
        out = poisoned(case["rows"], width, dtype=dtype)
        qkv = case["qkv"]
        ok(K.paged_attention(qkv.data_ptr(), 3 * width, qkv[:, width:].data_ptr(), qkv[:, 2 * width:].data_ptr(),
                             3 * width, case["slots"].data_ptr(), case["k"].data_ptr(), case["v"].data_ptr(),
                             case["tables"].data_ptr(), case["max_blocks"], case["vis"].data_ptr(), tiles.data_ptr(),
                             tiles.numel() // 8, tile_rows, case["rows"], heads, head_dim, block_size, case["scale"],
                             out.data_ptr(), width, f32=dtype == torch.float32))
        return out

    out = attend()
    assert not out.isnan().any()
    # the rows' K/V went to their slots; nothing else in the cache changed
    slots = case["slots"].long()
    kept = slots >= 0
    assert torch.equal(case["k"][slots[kept]], case["qkv"][kept, width:2 * width])
    assert torch.equal(case["v"][slots[kept]], case["qkv"][kept, 2 * width:])
    untouched = torch.ones(len(k0), dtype=torch.bool, device=DEV)
    untouched[slots[kept]] = False
    assert torch.equal(bits(case["k"][untouched]), bits(k0[untouched]))  # NaN poison too
    assert torch.equal(bits(case["v"][untouched]), bits(v0[untouched]))
    # again: the same bits (no order-dependent sums, nothing left over from the first launch)
    assert torch.equal(attend(), out)
    err, base = rel(out, ref), rel(same, ref)
    print(f"attention {dtype} heads {heads} head_dim {head_dim} rows {case['rows']} max_len {max_len}: "
          f"rel err {err:.2e} (same-precision torch {base:.2e})")
    assert err <= GPU_ERROR_RATIO * base, (err, base)


def test_attention_plan_rejects_broken_rows():
    """A sequence's rows must hold consecutive positions and form one run: otherwise the plan
    says so (tile_rows 0) and the kernel refuses the launch."""
    seq = np.array([0, 0, 1, 1], np.int32)
    vis = np.array([3, 3, 3, 3], np.int32)
    for pos, seqs in [([0, 2, 0, 1], seq), ([0, 1, 0, 1], np.array([0, 0, 1, 0], np.int32))]:
        tiles, tile_rows = K.plan_attention_tiles(seqs.tobytes(), np.array(pos, np.int32).tobytes(), vis.tobytes())
        assert tile_rows == 0
    assert K.plan_attention_tiles(seq.tobytes(), np.array([0, 1, 2, 3], np.int32).tobytes(), vis.tobytes())[1] == 32
    dummy = torch.zeros(64, dtype=torch.int32, device=DEV)
    p = dummy.data_ptr()
    assert K.paged_attention(p, 64, p, p, 64, p, p, p, p, 1, p, p, 1, 0, 4, 1, 64, 16, 0.125, p, 64) == "invalid argument"


@pytest.mark.parametrize("m,n,k,out_fp32,accumulate,bias,f32", [
    (37, 136, 72, False, False, True, False),
    (1, 1024, 1024, True, True, True, False),
    (129, 64, 264, True, False, False, False),
    (37, 136, 72, True, False, True, True),  # float32 operands: a plain float32 GEMM
    (3, 1024, 1000, True, True, True, True),
])
def test_gemm(m, n, k, out_fp32, accumulate, bias, f32):
    g = torch.Generator(device=DEV).manual_seed(m + n + k)
    a = torch.randn(m, k, device=DEV, generator=g).to(torch.float32 if f32 else torch.bfloat16)
    w = torch.randn(n, k, device=DEV, generator=g).to(a.dtype)
    dtype = torch.float32 if out_fp32 else torch.bfloat16
    b = torch.randn(n, device=DEV, generator=g).to(dtype) if bias else None
    c0 = torch.randn(m, n, device=DEV, generator=g).to(dtype) if accumulate else poisoned(m, n, dtype=dtype)
    c, again = c0.clone(), c0.clone()
    for out in (c, again):
        ok(K.gemm(a.data_ptr(), k, w.data_ptr(), k, b.data_ptr() if bias else 0, out.data_ptr(), n, m, n, k, out_fp32,
                  accumulate, f32=f32))
    assert torch.equal(c, again)  # the same bits on a repeated call
    ref = a.double() @ w.double().T + (b.double() if bias else 0) + (c0.double() if accumulate else 0)
    same = (a @ w.T).float() + (b.float() if bias else 0) + (c0.float() if accumulate else 0)
    assert not c.isnan().any()
    assert rel(c, ref) <= GPU_ERROR_RATIO * max(rel(same.to(dtype), ref), 1e-7) + 1e-6


def test_gemm_batched_with_w_stored_k_by_n():
    """The VQ attention's P.V: batch of products, w stored [k, n] with a row stride > n."""
    g = torch.Generator(device=DEV).manual_seed(5)
    batch, m, n, k, ldw = 3, 37, 24, 41, 3 * 24
    a = torch.randn(batch, m, k, device=DEV, generator=g).bfloat16()
    w = torch.randn(batch, k, ldw, device=DEV, generator=g).bfloat16()
    c = poisoned(batch, m, n, dtype=torch.bfloat16)
    ok(K.gemm(a.data_ptr(), k, w[:, :, n:].data_ptr(), ldw, 0, c.data_ptr(), n, m, n, k, False, False, w_kn=True,
              batch=batch, stride_a=m * k, stride_w=k * ldw, stride_c=m * n))
    wk = w[:, :, n:2 * n]
    ref = a.double() @ wk.double()
    same = (a @ wk).float()
    assert not c.isnan().any()
    assert rel(c, ref) <= GPU_ERROR_RATIO * rel(same.bfloat16(), ref) + 1e-6


# -- the VQ decoder's operators ------------------------------------------------------------------

@pytest.mark.parametrize("n,pixels,channels,bias,fold,swish", [
    (3, 37, 96, True, True, True),      # 3 channels per group: vectors straddle groups
    (2, 1031, 64, True, False, True),
    (1, 256, 512, False, False, False),
    (2, 4099, 128, True, False, False),  # several statistics blocks per image
])
def test_group_norm(n, pixels, channels, bias, fold, swish):
    g = torch.Generator(device=DEV).manual_seed(pixels + channels)
    x0 = (torch.randn(n, pixels, channels, device=DEV, generator=g) * 2 + 3).bfloat16()
    b = (torch.randn(channels, device=DEV, generator=g)).bfloat16() if bias else None
    gamma, beta = torch.randn(channels, device=DEV, generator=g), torch.randn(channels, device=DEV, generator=g)
    x = x0.clone()
    work = poisoned(K.group_norm_workspace_floats(n, pixels, channels, 32), dtype=torch.float32)
    stats = poisoned(n, 32, 2, dtype=torch.float32)
    ok(K.group_norm_stats(x.data_ptr(), b.data_ptr() if bias else 0, fold, n, pixels, channels, 32, 1e-6,
                          work.data_ptr(), stats.data_ptr()))
    xin = (x0.float() + b.float()).bfloat16() if bias else x0  # the bf16 conv + bias value
    if fold:
        assert torch.equal(x, xin)
    else:
        assert torch.equal(x, x0)
    out = poisoned(n, pixels, channels, dtype=torch.bfloat16)
    ok(K.group_norm_apply(x.data_ptr(), b.data_ptr() if bias and not fold else 0, stats.data_ptr(), gamma.data_ptr(),
                          beta.data_ptr(), swish, n, pixels, channels, 32, out.data_ptr()))

    def gn(t):
        y = torch.nn.functional.group_norm(t.permute(0, 2, 1), 32, gamma.to(t.dtype), beta.to(t.dtype), 1e-6)
        y = y.permute(0, 2, 1)
        return y * torch.sigmoid(y) if swish else y

    ref = gn(xin.double())
    same = gn(xin.float()).bfloat16()
    assert not out.isnan().any()
    assert rel(out, ref) <= GPU_ERROR_RATIO * rel(same, ref) + 1e-6


@pytest.mark.parametrize("n,h,w,c_in,c_out,kernel", [(2, 9, 7, 24, 40, 3), (1, 16, 16, 64, 8, 3), (3, 5, 11, 32, 16, 1)])
def test_conv2d(n, h, w, c_in, c_out, kernel):
    g = torch.Generator(device=DEV).manual_seed(h * w + c_in)
    x = torch.randn(n, h, w, c_in, device=DEV, generator=g).bfloat16()
    wt = (torch.randn(c_out, c_in, kernel, kernel, device=DEV, generator=g) * (c_in * kernel * kernel) ** -0.5)
    wt = wt.bfloat16()
    y0 = torch.randn(n, h, w, c_out, device=DEV, generator=g).bfloat16()
    w_nhwc = wt.permute(0, 2, 3, 1).contiguous()
    y = poisoned(n, h, w, c_out, dtype=torch.bfloat16)
    ok(K.conv2d(x.data_ptr(), n, h, w, c_in, w_nhwc.data_ptr(), c_out, kernel, y.data_ptr(), False, 0))
    acc = y0.clone()
    scratch = poisoned(n, h, w, c_out, dtype=torch.bfloat16)
    ok(K.conv2d(x.data_ptr(), n, h, w, c_in, w_nhwc.data_ptr(), c_out, kernel, acc.data_ptr(), True,
                scratch.data_ptr()))

    def conv(t, k):
        return torch.nn.functional.conv2d(t.permute(0, 3, 1, 2), k, padding=kernel // 2).permute(0, 2, 3, 1)

    ref = conv(x.double(), wt.double())
    same = conv(x, wt)
    assert not y.isnan().any() and not acc.isnan().any()
    assert rel(y, ref) <= GPU_ERROR_RATIO * rel(same, ref) + 1e-6
    assert rel(acc, ref + y0.double()) <= GPU_ERROR_RATIO * rel((same.float() + y0.float()).bfloat16(),
                                                                ref + y0.double()) + 1e-6


def test_upsample_gather_softmax_to_rgb():
    g = torch.Generator(device=DEV).manual_seed(9)
    x = torch.randn(2, 3, 5, 24, device=DEV, generator=g).bfloat16()
    b = torch.randn(24, device=DEV, generator=g).bfloat16()
    up = poisoned(2, 6, 10, 24, dtype=torch.bfloat16)
    ok(K.upsample_nearest2x(x.data_ptr(), b.data_ptr(), 2, 3, 5, 24, up.data_ptr()))
    want = (x.float() + b.float()).bfloat16().repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(up, want)

    table = torch.randn(29, 40, device=DEV, generator=g).bfloat16()
    ids = torch.randint(0, 29, (53,), device=DEV, generator=g, dtype=torch.int32)
    rows = poisoned(53, 40, dtype=torch.bfloat16)
    ok(K.gather_rows(table.data_ptr(), ids.data_ptr(), 53, 40, rows.data_ptr()))
    assert torch.equal(rows, table[ids.long()])

    s = torch.randn(19, 257, device=DEV, generator=g) * 4
    p = poisoned(19, 257, dtype=torch.bfloat16)
    ok(K.softmax_rows(s.data_ptr(), 19, 257, 0.3, p.data_ptr()))
    ref = torch.softmax(s.double() * 0.3, -1)
    assert rel(p, ref) <= GPU_ERROR_RATIO * rel(torch.softmax(s * 0.3, -1).bfloat16(), ref) + 1e-6

    img = (torch.randn(77, 8, device=DEV, generator=g) * 1.2).bfloat16()
    bias = torch.randn(3, device=DEV, generator=g).bfloat16()
    rgb = torch.full((77, 3), 7, dtype=torch.uint8, device=DEV)
    ok(K.to_rgb(img.data_ptr(), 8, bias.data_ptr(), 77, rgb.data_ptr()))
    v = (img[:, :3].float() + bias.float()).cpu().numpy()
    want = np.rint(np.clip((v + np.float32(1)) / np.float32(2) * np.float32(255), 0, 255)).astype(np.uint8)
    assert np.array_equal(rgb.cpu().numpy(), want)


JOB = np.dtype([("seed", "<u8"), ("cond", "<i4"), ("uncond", "<i4"), ("weight", "<f4"), ("divisor", "<f4"),
                ("gen", "<i4"), ("image", "<i4"), ("top_k", "<i4"), ("greedy", "<i4"), ("out", "<i4"),
                ("reserved", "<i4")])


@pytest.mark.parametrize("temperature,top_k,near_ties", [(0.0, 0, False), (1.0, 0, False), (0.7, 50, False),
                                                         (1.3, 1000, False), (1.0, 0, True), (1.0, 50, True)])
def test_sampling_matches_python(temperature, top_k, near_ties):
    """near_ties: every logit is log(-log(u)) of its own uniform (+ a constant), so all float64
    Gumbel scores lie within float32 rounding of each other: the kernel's float32 first pass
    keeps thousands of candidates and the float64 pass must still pick the CPU's token."""
    from lpd_engine import rng as lpd_rng
    from lpd_engine import sampling

    assert K.sample_job_bytes() == JOB.itemsize
    vocab, jobs_n = 16384 + 5, 6
    rng = np.random.default_rng(top_k + int(temperature * 10))
    logits = (rng.standard_normal((2 * jobs_n, vocab)) * 3).astype(np.float32)
    weights = np.linspace(1.0, 4.8, jobs_n).astype(np.float32)
    jobs = np.zeros(jobs_n, JOB)
    jobs["seed"], jobs["cond"], jobs["uncond"] = 1234, np.arange(jobs_n), jobs_n + np.arange(jobs_n)
    jobs["weight"], jobs["divisor"] = weights, np.float32(max(temperature, 1e-5))
    jobs["gen"], jobs["image"] = np.arange(jobs_n) * 7, np.arange(jobs_n) % 2
    jobs["top_k"], jobs["greedy"], jobs["out"] = top_k, int(temperature == 0.0), np.arange(jobs_n)
    if near_ties:
        for j in range(jobs_n):
            u = lpd_rng.sampling_uniforms(1234, int(jobs["image"][j]), np.array([jobs["gen"][j]]), vocab)[0]
            logits[j] = logits[jobs_n + j] = (np.log(-np.log(u)) + 0.25).astype(np.float32)
            score = logits[j].astype(np.float64) - np.log(-np.log(u))
            assert (score >= score.max() - 1e-6).sum() > 1000  # the case really is all near-ties
    d_logits = torch.from_numpy(logits).to(DEV)
    d_jobs = torch.from_numpy(jobs.view(np.uint8)).to(DEV)
    tokens = torch.full((jobs_n,), -7, dtype=torch.int32, device=DEV)
    ok(K.sample_tokens(d_logits.data_ptr(), vocab, d_jobs.data_ptr(), jobs_n, tokens.data_ptr()))
    guided = sampling.apply_guidance(logits[None, :jobs_n], logits[None, jobs_n:], weights)[0]
    params = sampling.SamplingParams(temperature=temperature, top_k=top_k, top_p=1.0, seed=1234)
    expect = [int(sampling.sample(guided[None, j:j + 1], params, [int(jobs["image"][j])], [int(jobs["gen"][j])])[0, 0])
              for j in range(jobs_n)]
    assert tokens.cpu().tolist() == expect


# -- the GPU step decoder end to end, on the embedded demo bundle ------------------------------

def _demo_request(batch, steps=16, seed=0):
    from lpd_engine import schedule
    from lpd_engine.bundle import DEMO_BUNDLE, open_bundle

    config = open_bundle(DEMO_BUNDLE).config
    group_sizes = schedule.published_group_sizes(config.grid, steps)
    orders = schedule.locality_orders(config.grid, group_sizes, batch, seed)
    labels = np.arange(batch) % config.num_classes
    return DEMO_BUNDLE, config, labels, np.asarray(group_sizes), orders


def _run(engine, labels, group_sizes, orders, cfg, temperature=0.0, top_k=0, top_p=1.0, collect=False):
    rid = engine.submit(labels, group_sizes, orders.reshape(-1), cfg, "linear", temperature, top_k, top_p, 7, False)
    steps = []
    while engine.state(rid) != "done":
        engine.step()
        if collect:
            steps.append(engine.last_logits())
    return engine.take(rid)[0], steps


@pytest.mark.parametrize("cfg", [1.0, 4.8])
def test_demo_float32_greedy_tokens_match_cpu(cfg):
    """The float32 mode computes the CPU path's model at float32 rounding, so free-running greedy
    generation stays on the CPU's tokens (bf16 cannot: see the per-step test below)."""
    bundle, config, labels, gs, orders = _demo_request(batch=16)
    cpu = _C.Engine(str(bundle), kv_pool_blocks=1024, num_threads=4)
    gpu = _C.Engine(str(bundle), kv_pool_blocks=1024, device="cuda", precision="fp32")
    assert (cpu.precision, gpu.precision) == ("fp32", "fp32")
    want, _ = _run(cpu, labels, gs, orders, cfg)
    got, _ = _run(gpu, labels, gs, orders, cfg)
    got2, _ = _run(gpu, labels, gs, orders, cfg)  # second run replays the CUDA graphs
    agree = float((got == want).mean())
    print(f"float32 GPU greedy token agreement with the CPU, cfg {cfg}: {agree:.4f} of {want.size}")
    assert agree >= GPU_TOKEN_AGREEMENT
    assert np.array_equal(got, got2)


def test_demo_sampled_tokens_replay_and_top_p_runs():
    bundle, config, labels, gs, orders = _demo_request(batch=3)
    gpu = _C.Engine(str(bundle), kv_pool_blocks=256, device="cuda")
    a, _ = _run(gpu, labels, gs, orders, 4.8, temperature=1.0, top_k=100)
    b, _ = _run(gpu, labels, gs, orders, 4.8, temperature=1.0, top_k=100)
    assert np.array_equal(a, b)
    c, _ = _run(gpu, labels, gs, orders, 4.8, temperature=1.0, top_p=0.9)
    assert c.shape == a.shape and c.min() >= 0 and c.max() < config.vocab_size


def test_demo_logits_match_bf16_reference():
    from lpd_engine.bundle import open_bundle

    bundle, config, labels, gs, orders = _demo_request(batch=1)
    gpu = _C.Engine(str(bundle), kv_pool_blocks=64, device="cuda")
    tokens, steps = _run(gpu, labels, gs, orders, 1.0, collect=True)
    ours = torch.from_numpy(np.concatenate(steps, axis=0)).to(DEV)  # [N, V] in generation order
    model = open_bundle(bundle).reference_models()[0].to(DEV).eval()
    args = (torch.from_numpy(tokens).to(DEV), torch.tensor([config.class_index(int(labels[0]))], device=DEV),
            torch.from_numpy(orders.reshape(1, -1)).long().to(DEV), [int(g) for g in gs])
    with torch.no_grad():
        ref64 = model.double().forward_training(*args)[0]
        ref16 = model.bfloat16().forward_training(*args)[0].float()
    err16, err64, base = rel(ours, ref16), rel(ours, ref64), rel(ref16, ref64)
    print(f"logits rel L2: vs bf16 torch {err16:.2e}, vs float64 {err64:.2e} (bf16 torch vs float64 {base:.2e})")
    assert err16 <= GPU_LOGITS_RTOL


def _teacher_forced_guided(config, tokens, labels, orders, gs, cfg, dtype, dev):
    """Guided logits [B, N, V] (float64, generation order) of the reference model in `dtype`,
    teacher-forced on `tokens` (raster order): what every step sees when its context is exactly
    these tokens."""
    from lpd_engine import sampling
    from lpd_engine.bundle import open_bundle

    from lpd_engine.bundle import DEMO_BUNDLE
    model = open_bundle(DEMO_BUNDLE).reference_models()[0].to(dev).to(dtype).eval()
    b, n = tokens.shape
    t = torch.from_numpy(tokens).long().to(dev)
    o = torch.from_numpy(orders.reshape(b, -1)).long().to(dev)
    cond = torch.tensor([config.class_index(int(y)) for y in labels], device=dev)
    with torch.no_grad():
        lc = model.forward_training(t, cond, o, [int(g) for g in gs]).double().cpu().numpy()
        if cfg == 1.0:
            return lc
        lu = model.forward_training(t, torch.full_like(cond, config.uncond_index), o,
                                    [int(g) for g in gs]).double().cpu().numpy()
    w = sampling.guidance_weights(sampling.SamplingParams(cfg=cfg), np.arange(n), n).astype(np.float64)
    return lu + w[None, :, None] * (lc - lu)


@pytest.mark.parametrize("cfg", [1.0, 4.8])
def test_demo_bf16_greedy_tokens_per_step(cfg):
    """bf16 greedy tokens against the CPU path's, per step. Free-running, one near-tie flip
    changes every later step's context, so the images part (86-96% of tokens agree on this
    demo model, whose top-2 logits are often within 0.05); any one bf16 rounding point of the
    network alone does that (NOTES run 43). So the bf16 path is held to the per-token standard
    of its precision class: in the steps before its first flip per image (each saw exactly the
    CPU's context) it must agree with the CPU at least as often as the bf16 torch reference does
    when fed the CPU's tokens at every step.

    - cascade-free GPU agreement: the GPU engine's tokens in every step up to and including
      the first step where it differs from the CPU, per image;
    - teacher-forced bf16 torch: the reference model in bf16, every step fed the CPU's greedy
      tokens; float64 the same (a check of the reference itself);
    - the float64 top-1 / top-2 logit gap at the GPU's cascade-free flips against all positions."""
    bundle, config, labels, gs, orders = _demo_request(batch=4)
    cpu = _C.Engine(str(bundle), kv_pool_blocks=256, num_threads=4)
    gpu = _C.Engine(str(bundle), kv_pool_blocks=256, device="cuda")
    want, _ = _run(cpu, labels, gs, orders, cfg)
    got, _ = _run(gpu, labels, gs, orders, cfg)
    got2, _ = _run(gpu, labels, gs, orders, cfg)  # second run replays the CUDA graphs
    assert np.array_equal(got, got2)
    b, n = want.shape
    orders = orders.reshape(b, n)
    gen_want = np.take_along_axis(want, orders, axis=1)  # generation order
    gen_got = np.take_along_axis(got, orders, axis=1)
    ends = np.cumsum(gs)  # gen index one past each step's group
    clean = np.zeros((b, n), bool)
    for i in range(b):
        diff = np.nonzero(gen_got[i] != gen_want[i])[0]
        stop = n if len(diff) == 0 else int(ends[np.searchsorted(ends, diff[0], side="right")])
        clean[i, :stop] = True
    same = gen_got == gen_want
    free = float(same.mean())
    clean_agree = float(same[clean].mean())
    after = float(same[~clean].mean()) if (~clean).any() else float("nan")
    ref64 = _teacher_forced_guided(config, want, labels, orders, gs, cfg, torch.float64, DEV)
    ref16 = _teacher_forced_guided(config, want, labels, orders, gs, cfg, torch.bfloat16, DEV)
    tf64 = float((ref64.argmax(-1) == gen_want).mean())
    tf16 = float((ref16.argmax(-1) == gen_want).mean())
    top2 = np.sort(ref64, axis=-1)[..., -2:]
    gap = top2[..., 1] - top2[..., 0]
    flips = clean & ~same
    print(f"cfg {cfg}: free-running GPU vs CPU {free:.4f}; cascade-free GPU {clean_agree:.4f} over "
          f"{int(clean.sum())} tokens ({int(flips.sum())} flips), after the first flip {after:.4f} over "
          f"{int((~clean).sum())}; teacher-forced on CPU tokens: bf16 torch {tf16:.4f}, float64 {tf64:.4f}; "
          f"float64 top-2 gap median {np.median(gap):.3g}, at the GPU flips "
          f"{np.array2string(np.sort(gap[flips])[:8], precision=3)}, positions with gap < 0.05: "
          f"{float((gap < 0.05).mean()):.4f}")
    assert tf64 >= GPU_TOKEN_AGREEMENT
    assert clean_agree >= tf16


# -- the GPU VQ decoder end to end -----------------------------------------------------------------

@pytest.fixture(scope="module")
def vq_bundle(tmp_path_factory):
    """Tiny LPD on a 16 x 16 grid with the tiny VQ (32 x 32 images, attention over 256 pixels,
    a channel change with its 1x1 shortcut)."""
    import build_engine
    from factories import make_lpd_state_dict, make_vq_state_dict, tiny_lpd_config, tiny_vq_config

    lpd_sd = make_lpd_state_dict(tiny_lpd_config(num_tokens=256), seed=1)
    vq_sd = make_vq_state_dict(tiny_vq_config(has_encoder=False), seed=2, with_encoder=False)
    return build_engine.build_bundle(lpd_sd, vq_sd, tmp_path_factory.mktemp("vq") / "bundle", onnx=False,
                                     progress=False, steps=[]), vq_sd


def _pixels(images):
    """float images [B, 3, H, W] about [-1, 1] -> float32 pixel values [B, H, W, 3] before rounding."""
    return ((images.float().permute(0, 2, 3, 1) + 1) / 2 * 255).clamp(0, 255).cpu().numpy()


def test_vq_decoder_matches_reference(vq_bundle):
    """GPU decode (in chunks of 2 images) against the float64 reference, within 2x the error of
    the same network in bf16 torch; and close to the CPU engine's pixels."""
    from lpd_engine.reference import build_vq

    bundle, vq_sd = vq_bundle
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 29, (5, 256))
    gpu = _C.Engine(str(bundle), kv_pool_blocks=64, device="cuda")
    ours = gpu.decode(tokens)
    again = gpu.decode(tokens)
    one_by_one = _C.Engine(str(bundle), kv_pool_blocks=64, device="cuda", vq_activation_bytes=1).decode(tokens)
    cpu = _C.Engine(str(bundle), kv_pool_blocks=64, num_threads=4).decode(tokens)
    vq = build_vq(vq_sd).to(DEV).eval()
    codes = torch.from_numpy(tokens).to(DEV)
    with torch.no_grad():
        ref = _pixels(vq.double().decode_codes(codes))
        same = np.rint(_pixels(vq.bfloat16().decode_codes(codes)))
    err, base = np.abs(ours - ref).mean(), np.abs(same - ref).mean()
    cpu_diff = np.abs(ours.astype(int) - cpu.astype(int))
    err1 = np.abs(one_by_one - ref).mean()
    print(f"VQ decode mean |error| vs float64: ours {err:.3f} levels (one image per chunk {err1:.3f}), bf16 torch "
          f"{base:.3f}; vs the CPU engine: mean {cpu_diff.mean():.3f}, max {cpu_diff.max()}")
    assert ours.shape == (5, 32, 32, 3) and ours.dtype == np.uint8
    assert np.array_equal(again, ours)  # a repeated shape reuses its plans: the same pixels
    assert err <= GPU_ERROR_RATIO * base + 0.05
    assert err1 <= GPU_ERROR_RATIO * base + 0.05
    with pytest.raises(Exception, match="token id out of range"):
        gpu.decode(np.full((1, 256), 29))


def test_demo_vq_decode_matches_cpu():
    """The trained demo decoder: GPU pixels against the CPU engine's (float32) pixels."""
    from lpd_engine.bundle import DEMO_BUNDLE

    tokens = np.random.default_rng(1).integers(0, 512, (8, 256))
    gpu = _C.Engine(str(DEMO_BUNDLE), kv_pool_blocks=64, device="cuda").decode(tokens)
    cpu = _C.Engine(str(DEMO_BUNDLE), kv_pool_blocks=64, num_threads=4).decode(tokens)
    diff = np.abs(gpu.astype(int) - cpu.astype(int))
    print(f"demo VQ decode GPU vs CPU: mean {diff.mean():.3f} levels, max {diff.max()}")
    assert diff.mean() <= 1.0


def test_generator_on_the_gpu_matches_its_own_pixels():
    """lpd_engine.Generator(device="cuda") end to end on the demo bundle: tokens and pixels come
    from the GPU engine, repeat exactly, and decode like the CPU decoder decodes those tokens."""
    from lpd_engine import Generator

    gpu = Generator(device="cuda")
    a = gpu.run([1, 7, 3], steps=8, seed=5, progress=False)
    b = gpu.run([1, 7, 3], steps=8, seed=5, progress=False)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.pixels, b.pixels)
    cpu_pixels = Generator(backend="native").backend.decode(a.tokens)
    assert np.abs(a.pixels.astype(int) - cpu_pixels).mean() <= 1.0
