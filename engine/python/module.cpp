// lpd_engine._C: the pybind11 module over the C++ engine.
//
// Kept thin on purpose (STYLE.md habit 3): it converts types, releases the GIL around long
// calls and maps C++ exceptions to the typed errors of lpd_engine.errors. Validation, defaults
// and documentation live in the Python front end (lpd_engine.schedule) and in the C++ headers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "lpd/schedule.h"

namespace py = pybind11;

void bind_runtime(py::module_& m);  // engine/python/bind_runtime.cpp
#ifdef LPD_WITH_CUDA
void bind_cuda(py::module_& m);  // engine/python/bind_cuda.cpp
#endif

// Raises lpd_engine.errors.<name>, or ValueError should that module not import. Shared with
// bind_runtime.cpp.
void raise_lpd_error(const char* name, const char* message) {
  try {
    py::set_error(py::module_::import("lpd_engine.errors").attr(name), message);
  } catch (py::error_already_set&) {
    py::set_error(PyExc_ValueError, message);
  }
}

namespace {

py::array_t<int64_t> locality_orders(int64_t grid, std::vector<int64_t> group_sizes, int64_t count, uint64_t seed,
                                     double repulsion, double proximity, int64_t first_index, int threads) {
  const lpd::LocalityParams params{grid, std::move(group_sizes), seed, repulsion, proximity};
  lpd::validate_locality_params(params);
  if (count < 0) throw lpd::ScheduleError("count must be >= 0, got " + std::to_string(count));
  py::array_t<int64_t> out({count, grid * grid});
  int64_t* data = out.mutable_data();
  {
    py::gil_scoped_release release;
    lpd::locality_orders(params, first_index, count, data, threads);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "lpd-engine native module (see lpd_engine.schedule for the documented API)";
  bind_runtime(m);
#ifdef LPD_WITH_CUDA
  bind_cuda(m);
#endif

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const lpd::ScheduleError& e) {
      raise_lpd_error("InvalidScheduleError", e.what());
    }
  });

  m.def("locality_orders", &locality_orders, py::arg("grid"), py::arg("group_sizes"), py::arg("count"),
        py::arg("seed"), py::arg("repulsion"), py::arg("proximity"), py::arg("first_index") = 0,
        py::arg("threads") = 0,
        "Locality-aware orders j = first_index .. first_index + count - 1: int64 [count, grid * grid].");
}
