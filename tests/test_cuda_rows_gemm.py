"""The few-row bf16 GEMM (cuda_kernels.rows_gemm) on the GPU: the lpd_l layer shapes and an odd
one, every epilogue with and without bias, against a float64 reference (error at most
GPU_ERROR_RATIO times that of the same computation in bf16 torch), strided operands with
NaN-poisoned outputs, the fused KV-cache scatter, bit-identical repeated calls (split-K counters
left at zero) and the argument checks. Skips, saying why, where torch has no GPU or
lpd_engine._C was built without the CUDA path."""

import pytest

torch = pytest.importorskip("torch")
from conftest import GPU_ERROR_RATIO  # noqa: E402

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
STORE, GELU, ACCUMULATE = 0, 1, 2  # RowsEpilogue

# (n, k): lpd_l qkv, proj, fc1, fc2, and an odd one (a partial column tile, k < one 64-chunk).
SHAPES = [(3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096), (200, 48)]


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def poisoned(*shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


def ok(status):
    assert status == "ok", status
    torch.cuda.synchronize()


def _inputs(m, n, k, epilogue, bias, seed):
    """a [m, k] and c [m, n] as views of wider buffers (lda = k + 16, ldc = n + 8, one extra row
    of c): the kernel must honour the strides and leave the rest of c's buffer alone."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    dtype = torch.float32 if epilogue == ACCUMULATE else torch.bfloat16
    a_buf = torch.randn(m, k + 16, device=DEV, generator=g).bfloat16()
    w = (torch.randn(n, k, device=DEV, generator=g) * k ** -0.5).bfloat16()
    b = torch.randn(n, device=DEV, generator=g).to(dtype) if bias else None
    if epilogue == ACCUMULATE:
        c_buf = torch.randn(m + 1, n + 8, device=DEV, generator=g)
    else:
        c_buf = poisoned(m + 1, n + 8, dtype=dtype)
    return a_buf, w, b, c_buf


def _call(a_buf, w, b, c_buf, m, n, k, epilogue, **scatter):
    return K.rows_gemm(a_buf.data_ptr(), a_buf.stride(0), w.data_ptr(), k, b.data_ptr() if b is not None else 0,
                       c_buf.data_ptr(), c_buf.stride(0), m, n, k, epilogue, **scatter)


def _references(a, w, b, c0, epilogue):
    """(float64 reference, the same computation in bf16 torch rounded to the output dtype)."""
    ref = a.double() @ w.double().T + (b.double() if b is not None else 0)
    same = (a @ w.T).float() + (b.float() if b is not None else 0)
    if epilogue == GELU:
        ref = torch.nn.functional.gelu(ref)
        same = torch.nn.functional.gelu(same)
    if epilogue == ACCUMULATE:
        return c0.double() + ref, c0 + same
    return ref, same.bfloat16()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("epilogue", [STORE, GELU, ACCUMULATE])
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m", [1, 17, 51, 128])
def test_rows_gemm(m, n, k, epilogue, bias):
    a_buf, w, b, c_buf = _inputs(m, n, k, epilogue, bias, seed=m * 7 + n + k + 3 * epilogue + bias)
    before = c_buf.clone()
    ok(_call(a_buf, w, b, c_buf, m, n, k, epilogue))
    c = c_buf[:m, :n]
    ref, same = _references(a_buf[:, :k], w, b, before[:m, :n], epilogue)
    assert not c.isnan().any()
    assert rel(c, ref) <= GPU_ERROR_RATIO * rel(same, ref) + 1e-6, (rel(c, ref), rel(same, ref))
    outside = torch.ones_like(c_buf, dtype=torch.bool)
    outside[:m, :n] = False
    assert torch.equal(c_buf[outside].isnan(), before[outside].isnan())
    assert torch.equal(c_buf[outside].nan_to_num(), before[outside].nan_to_num())


@pytest.mark.parametrize("epilogue", [STORE, GELU])
@pytest.mark.parametrize("m,width,k", [(1, 1024, 1024), (17, 1024, 1024), (128, 1024, 1024), (51, 72, 48)])
def test_rows_gemm_kv_scatter(m, width, k, epilogue):
    n, num_slots = 3 * width, 2 * m + 5
    a_buf, w, b, c_buf = _inputs(m, n, k, epilogue, True, seed=m + width + k + epilogue)
    g = torch.Generator(device=DEV).manual_seed(m)
    slots = torch.randperm(num_slots, device=DEV, generator=g)[:m].to(torch.int32)
    if m > 1:
        slots[m // 2] = -1
    kc, vc = poisoned(num_slots, width, dtype=torch.bfloat16), poisoned(num_slots, width, dtype=torch.bfloat16)
    ok(_call(a_buf, w, b, c_buf, m, n, k, epilogue, slots=slots.data_ptr(), k_cache=kc.data_ptr(),
             v_cache=vc.data_ptr(), width=width))
    c = c_buf[:m, :n]
    ref, same = _references(a_buf[:, :k], w, b, None, epilogue)
    assert not c.isnan().any()
    assert rel(c, ref) <= GPU_ERROR_RATIO * rel(same, ref) + 1e-6, (rel(c, ref), rel(same, ref))
    s = slots.long()
    keep = s >= 0
    assert torch.equal(kc[s[keep]], c[keep, width:2 * width])
    assert torch.equal(vc[s[keep]], c[keep, 2 * width:])
    untouched = torch.ones(num_slots, dtype=torch.bool, device=DEV)
    untouched[s[keep]] = False
    assert kc[untouched].isnan().all() and vc[untouched].isnan().all()


@pytest.mark.parametrize("epilogue", [STORE, ACCUMULATE])
@pytest.mark.parametrize("m,n,k", [(1, 1024, 1024), (51, 1024, 4096), (128, 3072, 1024), (17, 200, 48)])
def test_rows_gemm_repeats_bit_identical(m, n, k, epilogue):
    """Split-K partials are summed in a fixed order, and the counters are back at zero after each
    call: three calls in a row from the same inputs give the same bits."""
    a_buf, w, b, c_buf = _inputs(m, n, k, epilogue, True, seed=m + n + k)
    start = c_buf.clone()
    outs = []
    for _ in range(3):
        c_buf.copy_(start)
        ok(_call(a_buf, w, b, c_buf, m, n, k, epilogue))
        outs.append(c_buf[:m, :n].clone())
    assert not outs[0].isnan().any()
    assert all(torch.equal(o, outs[0]) for o in outs[1:])


def test_rows_gemm_argument_checks():
    a = torch.randn(130, 64, device=DEV).bfloat16()
    w = torch.randn(64, 64, device=DEV).bfloat16()
    c = poisoned(130, 64, dtype=torch.bfloat16)
    args = (a.data_ptr(), 64, w.data_ptr(), 64, 0, c.data_ptr(), 64)
    assert K.rows_gemm(*args, 129, 64, 64, STORE) == "unsupported"  # m > 128
    assert K.rows_gemm(*args, 4, 60, 64, STORE) == "unsupported"    # n % 8
    assert K.rows_gemm(*args, 4, 64, 56, STORE) == "unsupported"    # k % 16
    assert K.rows_gemm(a.data_ptr() + 2, 64, w.data_ptr(), 64, 0, c.data_ptr(), 64, 4, 64, 48, STORE) == "unsupported"
    assert K.rows_gemm(*args, 4, 64, 64, 3) == "invalid argument"   # no such epilogue
    assert K.rows_gemm(0, 64, w.data_ptr(), 64, 0, c.data_ptr(), 64, 4, 64, 64, STORE) == "invalid argument"
    assert K.rows_gemm(*args, 4, 64, 64, STORE, slots=a.data_ptr(), k_cache=c.data_ptr(), v_cache=c.data_ptr(),
                       width=20) == "invalid argument"                # n != 3 * width
    ok(K.rows_gemm(*args, 0, 64, 64, STORE))
    assert c.isnan().all()
