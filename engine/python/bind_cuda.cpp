// lpd_engine._C.cuda_kernels: the raw CUDA launchers of csrc/cuda for tests/test_cuda.py and
// bench/. Pointers are integers (torch's tensor.data_ptr()), work goes on the default stream,
// and each call returns the launcher's status string ("ok" or why not). Built only with the
// CUDA path; no logic here beyond argument conversion. f32=True: the float32 tensors of the
// launchers that take a DType (or an output type) instead of bf16.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "lpd/kernels/attention.h"
#include "lpd/kernels/conv.h"
#include "lpd/kernels/embedding.h"
#include "lpd/kernels/gemm.h"
#include "lpd/kernels/norm.h"
#include "lpd/kernels/sampling.h"

namespace py = pybind11;
namespace kc = lpd::kernels::cuda;

namespace {
template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}
const char* str(lpd::kernels::Status s) { return lpd::kernels::status_string(s); }
kc::DType dtype(bool f32) { return f32 ? kc::DType::kF32 : kc::DType::kBF16; }
}  // namespace

void bind_cuda(py::module_& parent) {
  py::module_ m = parent.def_submodule("cuda_kernels", "raw CUDA kernel launchers (tests, bench)");
  m.def(
      "layer_norm",
      [](uintptr_t x, int64_t ldx, uintptr_t row_index, uintptr_t g, uintptr_t b, float eps, uintptr_t out,
         int64_t ldo, int64_t rows, int64_t dim, bool f32) {
        const auto run = [&](auto* o) {
          return str(kc::layer_norm(ptr<const float>(x), ldx, ptr<const int32_t>(row_index), ptr<const float>(g),
                                    ptr<const float>(b), eps, o, ldo, rows, dim, nullptr));
        };
        return f32 ? run(ptr<float>(out)) : run(ptr<kc::bf16>(out));
      },
      py::arg("x"), py::arg("ldx"), py::arg("row_index"), py::arg("gamma"), py::arg("beta"), py::arg("eps"),
      py::arg("out"), py::arg("ldo"), py::arg("rows"), py::arg("dim"), py::arg("f32") = false);
  m.def(
      "gelu_erf",
      [](uintptr_t x, int64_t n, bool f32) {
        return str(f32 ? kc::gelu_erf(ptr<float>(x), n, nullptr) : kc::gelu_erf(ptr<kc::bf16>(x), n, nullptr));
      },
      py::arg("x"), py::arg("n"), py::arg("f32") = false);
  m.def(
      "embed_rows",
      [](uintptr_t table, uintptr_t pos, uintptr_t g, uintptr_t b, float eps, uintptr_t ids, uintptr_t pos_ids,
         uintptr_t tokens, int64_t rows, int64_t dim, int64_t table_rows, int64_t pos_rows, uintptr_t out, bool f32) {
        kc::EmbedParams p{ptr<const void>(table), ptr<const void>(pos), ptr<const float>(g), ptr<const float>(b),
                          eps, ptr<const int32_t>(ids), ptr<const int32_t>(pos_ids), ptr<const int32_t>(tokens),
                          rows, dim, table_rows, pos_rows, ptr<float>(out), dtype(f32)};
        return str(kc::embed_rows(p, nullptr));
      },
      py::arg("table"), py::arg("pos"), py::arg("gamma"), py::arg("beta"), py::arg("eps"), py::arg("ids"),
      py::arg("pos_ids"), py::arg("tokens"), py::arg("rows"), py::arg("dim"), py::arg("table_rows"),
      py::arg("pos_rows"), py::arg("out"), py::arg("f32") = false);
  m.def("plan_attention_tiles", [](py::bytes row_seq_bytes, py::bytes row_pos_bytes, py::bytes visible_len_bytes) {
    const std::string s = row_seq_bytes, pos = row_pos_bytes, v = visible_len_bytes;
    if (s.size() != v.size() || s.size() != pos.size() || s.size() % 4)
      throw py::value_error("row_seq, row_pos and visible_len: int32 bytes of equal length");
    const int64_t rows = static_cast<int64_t>(s.size() / 4), record = 4 * kc::kAttentionTileInts;
    std::string tiles(static_cast<size_t>(record * rows), '\0');
    const kc::AttentionTiles t = kc::plan_attention_tiles(
        reinterpret_cast<const int32_t*>(s.data()), reinterpret_cast<const int32_t*>(pos.data()),
        reinterpret_cast<const int32_t*>(v.data()), rows, reinterpret_cast<int32_t*>(tiles.data()));
    return py::make_tuple(py::bytes(tiles.data(), static_cast<size_t>(record * t.count)), t.tile_rows);
  });
  m.def(
      "paged_attention",
      [](uintptr_t q, int64_t q_stride, uintptr_t k_new, uintptr_t v_new, int64_t kv_stride, uintptr_t slots,
         uintptr_t k, uintptr_t v, uintptr_t tables, int64_t max_blocks, uintptr_t vis, uintptr_t tiles,
         int64_t num_tiles, int64_t tile_rows, int64_t rows, int64_t heads, int64_t head_dim, int64_t block_size,
         float scale, uintptr_t out, int64_t out_stride, bool f32) {
        kc::PagedAttentionParams p{ptr<const void>(q), q_stride, ptr<const void>(k_new), ptr<const void>(v_new),
                                   kv_stride, ptr<const int32_t>(slots), ptr<void>(k), ptr<void>(v),
                                   ptr<const int32_t>(tables), max_blocks, ptr<const int32_t>(vis),
                                   ptr<const int32_t>(tiles), num_tiles, tile_rows, rows, heads, head_dim,
                                   block_size, scale, ptr<void>(out), out_stride, dtype(f32)};
        return str(kc::paged_attention(p, nullptr));
      },
      py::arg("q"), py::arg("q_stride"), py::arg("k_new"), py::arg("v_new"), py::arg("kv_stride"), py::arg("slots"),
      py::arg("k"), py::arg("v"), py::arg("tables"), py::arg("max_blocks"), py::arg("vis"), py::arg("tiles"),
      py::arg("num_tiles"), py::arg("tile_rows"), py::arg("rows"), py::arg("heads"), py::arg("head_dim"),
      py::arg("block_size"), py::arg("scale"), py::arg("out"), py::arg("out_stride"), py::arg("f32") = false);
  m.def(
      "gemm",
      [](uintptr_t a, int64_t lda, uintptr_t w, int64_t ldw, uintptr_t bias, uintptr_t c, int64_t ldc, int64_t rows,
         int64_t n, int64_t k, bool out_fp32, bool accumulate, bool w_kn, int64_t batch, int64_t stride_a,
         int64_t stride_w, int64_t stride_c, bool f32) {
        static kc::GemmContext* ctx = kc::gemm_context_create();
        return str(kc::gemm(ctx,
                            {ptr<const void>(a), lda, ptr<const void>(w), ldw, ptr<const void>(bias), ptr<void>(c),
                             ldc, rows, n, k, out_fp32, accumulate, w_kn, batch, stride_a, stride_w, stride_c,
                             dtype(f32)},
                            nullptr));
      },
      py::arg("a"), py::arg("lda"), py::arg("w"), py::arg("ldw"), py::arg("bias"), py::arg("c"), py::arg("ldc"),
      py::arg("rows"), py::arg("n"), py::arg("k"), py::arg("out_fp32"), py::arg("accumulate"), py::arg("w_kn") = false,
      py::arg("batch") = 1, py::arg("stride_a") = 0, py::arg("stride_w") = 0, py::arg("stride_c") = 0,
      py::arg("f32") = false);
  m.def("group_norm_workspace_floats", &kc::group_norm_workspace_floats);
  m.def("group_norm_stats", [](uintptr_t x, uintptr_t bias, bool fold, int64_t n, int64_t pixels, int64_t channels,
                               int64_t groups, float eps, uintptr_t workspace, uintptr_t stats) {
    return str(kc::group_norm_stats(ptr<kc::bf16>(x), ptr<const kc::bf16>(bias), fold, n, pixels, channels, groups, eps,
                                    ptr<float>(workspace), ptr<float>(stats), nullptr));
  });
  m.def("group_norm_apply", [](uintptr_t x, uintptr_t bias, uintptr_t stats, uintptr_t g, uintptr_t b, bool swish,
                               int64_t n, int64_t pixels, int64_t channels, int64_t groups, uintptr_t out) {
    return str(kc::group_norm_apply(ptr<const kc::bf16>(x), ptr<const kc::bf16>(bias), ptr<const float>(stats),
                                    ptr<const float>(g), ptr<const float>(b), swish, n, pixels, channels, groups,
                                    ptr<kc::bf16>(out), nullptr));
  });
  m.def("conv2d", [](uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c_in, uintptr_t weight, int64_t c_out,
                     int64_t kernel, uintptr_t y, bool accumulate, uintptr_t scratch) {
    static kc::ConvContext* ctx = kc::conv_context_create(size_t{64} << 20);
    return str(kc::conv2d(ctx, {ptr<const kc::bf16>(x), n, h, w, c_in, ptr<const kc::bf16>(weight), c_out, kernel,
                                ptr<kc::bf16>(y), accumulate, ptr<kc::bf16>(scratch)},
                          nullptr));
  });
  m.def("upsample_nearest2x", [](uintptr_t x, uintptr_t bias, int64_t n, int64_t h, int64_t w, int64_t c,
                                 uintptr_t out) {
    return str(kc::upsample_nearest2x(ptr<const kc::bf16>(x), ptr<const kc::bf16>(bias), n, h, w, c,
                                      ptr<kc::bf16>(out), nullptr));
  });
  m.def("gather_rows", [](uintptr_t table, uintptr_t ids, int64_t rows, int64_t width, uintptr_t out) {
    return str(kc::gather_rows(ptr<const kc::bf16>(table), ptr<const int32_t>(ids), rows, width, ptr<kc::bf16>(out),
                               nullptr));
  });
  m.def("softmax_rows", [](uintptr_t s, int64_t rows, int64_t cols, float scale, uintptr_t p) {
    return str(kc::softmax_rows(ptr<const float>(s), rows, cols, scale, ptr<kc::bf16>(p), nullptr));
  });
  m.def("to_rgb", [](uintptr_t x, int64_t ldx, uintptr_t bias, int64_t pixels, uintptr_t rgb) {
    return str(kc::to_rgb(ptr<const kc::bf16>(x), ldx, ptr<const kc::bf16>(bias), pixels, ptr<uint8_t>(rgb), nullptr));
  });
  m.def("sample_job_bytes", []() { return static_cast<int64_t>(sizeof(kc::SampleJob)); });
  m.def("sample_tokens", [](uintptr_t logits, int64_t vocab, uintptr_t jobs, int64_t num_jobs, uintptr_t tokens) {
    return str(kc::sample_tokens(ptr<const float>(logits), vocab, ptr<const kc::SampleJob>(jobs), num_jobs,
                                 ptr<int32_t>(tokens), nullptr));
  });
}
