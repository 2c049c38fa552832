// lpd_engine._C.Engine: the request runtime (lpd/runtime.h) for Python.
//
// Thin on purpose (STYLE.md habit 3): numpy <-> std::vector conversions, the GIL released
// around step/generate, and lpd::Error kinds mapped to lpd_engine.errors classes. Defaults and
// validation live in lpd::EngineOptions / lpd::Engine::submit; python/lpd_engine/backends/
// native.py is the documented front end.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "lpd/errors.h"
#include "lpd/runtime.h"

namespace py = pybind11;

void raise_lpd_error(const char* name, const char* message);  // engine/python/module.cpp

namespace {

using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

std::vector<int64_t> to_vector(const Int64Array& a) { return std::vector<int64_t>(a.data(), a.data() + a.size()); }

lpd::RequestSpec make_spec(const Int64Array& labels, const Int64Array& group_sizes, const Int64Array& orders,
                           double cfg, const std::string& cfg_schedule, double temperature, int64_t top_k,
                           double top_p, uint64_t seed, bool decode_pixels) {
  lpd::RequestSpec spec;
  spec.labels = to_vector(labels);
  spec.group_sizes = to_vector(group_sizes);
  spec.orders = to_vector(orders);
  if (cfg_schedule == "linear") spec.sampling.cfg_schedule = lpd::CfgSchedule::kLinear;
  else if (cfg_schedule == "constant") spec.sampling.cfg_schedule = lpd::CfgSchedule::kConstant;
  else lpd::fail(lpd::ErrorKind::kInvalidSampling, "cfg_schedule must be 'linear' or 'constant', got '" + cfg_schedule + "'");
  spec.sampling.cfg = cfg;
  spec.sampling.temperature = temperature;
  spec.sampling.top_k = top_k;
  spec.sampling.top_p = top_p;
  spec.sampling.seed = seed;
  spec.decode_pixels = decode_pixels;
  return spec;
}

py::tuple result_to_python(lpd::RequestResult r) {
  py::array_t<int64_t> tokens({r.batch, r.num_tokens});
  std::copy(r.tokens.begin(), r.tokens.end(), tokens.mutable_data());
  py::object pixels = py::none();
  if (!r.pixels.empty()) {
    py::array_t<uint8_t> px({r.batch, r.height, r.width, static_cast<int64_t>(3)});
    std::copy(r.pixels.begin(), r.pixels.end(), px.mutable_data());
    pixels = px;
  }
  return py::make_tuple(tokens, pixels);
}

const char* state_name(lpd::RequestState s) {
  switch (s) {
    case lpd::RequestState::kQueued: return "queued";
    case lpd::RequestState::kRunning: return "running";
    case lpd::RequestState::kDone: return "done";
  }
  return "?";
}

// Defines Engine.<name> taking the request arguments (labels, group_sizes, orders, cfg, cfg_schedule,
// temperature, top_k, top_p, seed, decode_pixels) and then one argument per type in Extra, named
// by extra_args. run(engine, spec, extra...) gets the RequestSpec made from the request arguments.
template <typename... Extra, typename Run, typename... ExtraArgs>
void def_request(py::class_<lpd::Engine>& engine, const char* name, Run run, const ExtraArgs&... extra_args) {
  engine.def(
      name,
      [run](lpd::Engine& e, Int64Array labels, Int64Array group_sizes, Int64Array orders, double cfg,
            const std::string& cfg_schedule, double temperature, int64_t top_k, double top_p, uint64_t seed,
            bool decode_pixels, Extra... extra) {
        return run(e, make_spec(labels, group_sizes, orders, cfg, cfg_schedule, temperature, top_k, top_p, seed,
                                decode_pixels),
                   extra...);
      },
      py::arg("labels"), py::arg("group_sizes"), py::arg("orders"), py::arg("cfg"), py::arg("cfg_schedule"),
      py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("seed"), py::arg("decode_pixels"),
      extra_args...);
}

}  // namespace

void bind_runtime(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const lpd::Error& e) {
      switch (e.kind) {
        case lpd::ErrorKind::kInvalidLabel: raise_lpd_error("InvalidLabelError", e.what()); break;
        case lpd::ErrorKind::kInvalidSampling: raise_lpd_error("InvalidSamplingError", e.what()); break;
        case lpd::ErrorKind::kInvalidSchedule: raise_lpd_error("InvalidScheduleError", e.what()); break;
        case lpd::ErrorKind::kBundle: raise_lpd_error("BundleError", e.what()); break;
        case lpd::ErrorKind::kTooLarge:
        case lpd::ErrorKind::kInvalidArgument: raise_lpd_error("InvalidRequestError", e.what()); break;
        case lpd::ErrorKind::kUnknownRequest: py::set_error(PyExc_KeyError, e.what()); break;
        default: py::set_error(PyExc_RuntimeError, e.what()); break;
      }
    }
  });

  py::class_<lpd::Engine> engine(m, "Engine",
                                 "The C++ request runtime over one bundle (see lpd_engine.backends.native).");
  engine
      .def(py::init([](const std::string& dir, int64_t kv_pool_bytes, int64_t kv_pool_blocks, int64_t block_size,
                       int num_threads, bool verify_hashes, const std::string& device, const std::string& precision,
                       bool cuda_graphs, int64_t vq_activation_bytes) {
             lpd::EngineOptions o;
             o.device = device;
             o.precision = precision;
             o.cuda_graphs = cuda_graphs;
             o.vq_activation_bytes = vq_activation_bytes;
             o.kv_pool_bytes = kv_pool_bytes;
             o.kv_pool_blocks = kv_pool_blocks;
             o.block_size = block_size;
             o.num_threads = num_threads;
             o.verify_hashes = verify_hashes;
             py::gil_scoped_release release;
             return std::make_unique<lpd::Engine>(dir, o);
           }),
           py::arg("bundle_dir"), py::arg("kv_pool_bytes") = 0, py::arg("kv_pool_blocks") = 0,
           py::arg("block_size") = 16, py::arg("num_threads") = 0, py::arg("verify_hashes") = true,
           py::arg("device") = "cpu", py::arg("precision") = "", py::arg("cuda_graphs") = true,
           py::arg("vq_activation_bytes") = lpd::EngineOptions{}.vq_activation_bytes)
      .def_property_readonly("device", &lpd::Engine::device)
      .def_property_readonly("precision", &lpd::Engine::precision)
      .def_static("cuda_available", &lpd::Engine::cuda_available)
      .def("last_logits",
           [](lpd::Engine& e) {
             std::vector<float> l = e.last_logits();
             const int64_t v = e.config().vocab_size;
             py::array_t<float> out({static_cast<int64_t>(l.size()) / v, v});
             std::copy(l.begin(), l.end(), out.mutable_data());
             return out;
           },
           "The last step's logits [rows, vocab] (tests).");
  def_request<uint32_t>(
      engine, "submit",
      [](lpd::Engine& e, lpd::RequestSpec spec, uint32_t first_image) {
        spec.first_image = first_image;
        return e.submit(std::move(spec));
      },
      py::arg("first_image") = 0);
  engine
      .def("step", &lpd::Engine::step, py::call_guard<py::gil_scoped_release>(),
           "Admit what fits, advance every running request one step; returns requests still active.")
      .def("state", [](const lpd::Engine& e, int64_t id) { return state_name(e.state(id)); })
      .def("take", [](lpd::Engine& e, int64_t id) { return result_to_python(e.take(id)); })
      .def("release", &lpd::Engine::release)
      .def(
          "submit_steps",
          [](lpd::Engine& e, Int64Array labels, int64_t steps, double cfg, const std::string& cfg_schedule,
             double temperature, int64_t top_k, double top_p, uint64_t seed, bool decode_pixels) {
            const Int64Array none(0);
            lpd::RequestSpec spec =
                make_spec(labels, none, none, cfg, cfg_schedule, temperature, top_k, top_p, seed, decode_pixels);
            lpd::ImageSchedule s = e.schedules().for_steps(steps, seed, static_cast<int64_t>(spec.labels.size()));
            spec.group_sizes = std::move(s.group_sizes);
            spec.orders = std::move(s.orders);
            return e.submit(std::move(spec));
          },
          py::arg("labels"), py::arg("steps"), py::arg("cfg"), py::arg("cfg_schedule"), py::arg("temperature"),
          py::arg("top_k"), py::arg("top_p"), py::arg("seed"), py::arg("decode_pixels"))
      .def(
          "default_orders",
          [](const lpd::Engine& e, Int64Array group_sizes, int64_t batch, uint64_t seed) {
            const std::vector<int64_t> orders = e.schedules().default_orders(to_vector(group_sizes), seed, batch);
            py::array_t<int64_t> out({batch, e.config().num_tokens});
            std::copy(orders.begin(), orders.end(), out.mutable_data());
            return out;
          },
          py::arg("group_sizes"), py::arg("batch"), py::arg("seed"))
      .def("default_cfg", [](const lpd::Engine& e, int64_t steps) { return e.schedules().default_cfg(steps); })
      .def_property_readonly("schedule_steps", [](const lpd::Engine& e) { return e.schedules().steps(); });
  def_request(engine, "generate", [](lpd::Engine& e, lpd::RequestSpec spec) {
    lpd::RequestResult r;
    {
      py::gil_scoped_release release;
      r = e.generate(std::move(spec));
    }
    return result_to_python(std::move(r));
  });
  engine
      .def("decode",
           [](const lpd::Engine& e, Int64Array tokens) {
             const int64_t n = e.config().num_tokens, side = e.image_size();
             if (tokens.ndim() != 2 || tokens.shape(1) != n)
               lpd::fail(lpd::ErrorKind::kInvalidArgument, "decode: tokens must be [batch, " + std::to_string(n) + "]");
             const int64_t batch = tokens.shape(0);
             py::array_t<uint8_t> out({batch, side, side, static_cast<int64_t>(3)});
             const int64_t* src = tokens.data();
             uint8_t* dst = out.mutable_data();
             {
               py::gil_scoped_release release;
               e.decode(src, batch, dst);
             }
             return out;
           })
      .def("blocks_for", &lpd::Engine::blocks_for, py::arg("batch"), py::arg("guided"))
      .def_property_readonly("num_blocks", &lpd::Engine::num_blocks)
      .def_property_readonly("free_blocks", &lpd::Engine::free_blocks)
      .def_property_readonly("block_size", &lpd::Engine::block_size)
      .def_property_readonly("image_size", &lpd::Engine::image_size)
      .def_property_readonly("num_tokens", [](const lpd::Engine& e) { return e.config().num_tokens; })
      .def_property_readonly("vocab_size", [](const lpd::Engine& e) { return e.config().vocab_size; })
      .def_property_readonly("num_classes", [](const lpd::Engine& e) { return e.config().num_classes; });
}
