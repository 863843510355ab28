// The Python module of the CPU execution harness (torch-free: numpy buffers in, the real launchers of
// csrc/cuda/kernels.h run on the CPU). Every buffer a call touches is copied into a fresh allocation of exactly
// its size (so AddressSanitizer sees any access past it), the workspace too (filled with 0xff bytes: NaN, so an
// unwritten partial shows), and copied back after the call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "lk_cuda_emu_api.h"

namespace py = pybind11;
using lk::cuda::DType;
using lk::cuda::Shape;
using lk::cuda::View;

// Defined by the planted-defect sample kernels of the test area (tests/cuda_emu/samples.cu).
cudaError_t lk_run_sample(const std::string& name, float* in, float* out, int64_t n, const std::vector<int64_t>& cfg);

namespace {

size_t elem_bytes(DType d) { return d == DType::F64 ? 8 : d == DType::F32 ? 4 : 2; }

// Exact-size copies of the numpy buffers of one call, shared by views of the same array, 256-byte aligned as
// cudaMalloc's are (sector counts depend on it; AddressSanitizer still sees the exact size).
class Arena {
 public:
  static unsigned char* device_alloc(size_t bytes) {
    void* p = nullptr;
    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) throw std::bad_alloc();
    return static_cast<unsigned char*>(p);
  }
  ~Arena() {
    for (auto& b : bufs_) std::free(b.copy);
  }
  unsigned char* get(const py::array& a) {
    if (!(a.flags() & py::array::c_style)) throw std::invalid_argument("lk_cuda_emu: buffers must be C-contiguous");
    const void* key = a.data();
    for (auto& b : bufs_)
      if (b.key == key && b.bytes == size_t(a.nbytes())) return b.copy;
    Buf b{a, key, size_t(a.nbytes()), device_alloc(size_t(a.nbytes()))};
    std::memcpy(b.copy, a.data(), b.bytes);
    bufs_.push_back(b);
    return b.copy;
  }
  unsigned char* scratch(size_t bytes) {
    unsigned char* p = device_alloc(bytes);
    std::memset(p, 0xff, bytes);
    bufs_.push_back(Buf{py::array(), nullptr, bytes, p});
    return p;
  }
  void copy_back() {
    for (auto& b : bufs_)
      if (b.key && b.array.writeable()) std::memcpy(b.array.mutable_data(), b.copy, b.bytes);
  }

 private:
  struct Buf {
    py::array array;
    const void* key;
    size_t bytes;
    unsigned char* copy;
  };
  std::vector<Buf> bufs_;
};

// A tensor argument from Python: (array, element offset, sn, sc, sp).
View tensor(Arena& arena, const py::tuple& t, DType d) {
  const py::array a = t[0].cast<py::array>();
  unsigned char* base = arena.get(a);
  return {base + t[1].cast<int64_t>() * int64_t(elem_bytes(d)), t[2].cast<int64_t>(), t[3].cast<int64_t>(),
          t[4].cast<int64_t>()};
}

void* plain(Arena& arena, const std::optional<py::array>& a) { return a ? arena.get(*a) : nullptr; }

Shape shape_of(const py::tuple& s) {
  return {s[0].cast<int64_t>(), s[1].cast<int64_t>(), s[2].cast<int64_t>(), s[3].cast<bool>()};
}

void check(cudaError_t err, const char* launcher) {
  if (err == cudaSuccess) return;
  const std::string why = lk_emu::last_failure();
  lk_emu::clear_failure();
  throw std::runtime_error(std::string(launcher) + ": " + cudaGetErrorString(err) + (why.empty() ? "" : ": " + why));
}

lk::cuda::Coefficients coefficients(Arena& arena, const std::vector<std::optional<py::array>>& c) {
  if (c.size() != 4) throw std::invalid_argument("lk_cuda_emu: 4 coefficients (None for the constant 1)");
  return {plain(arena, c[0]), plain(arena, c[1]), plain(arena, c[2]), plain(arena, c[3])};
}

py::list launch_log() {
  py::list out;
  for (const auto& r : lk_emu::take_log())
    out.append(py::make_tuple(r.kernel, py::make_tuple(r.grid.x, r.grid.y, r.grid.z),
                              py::make_tuple(r.block.x, r.block.y, r.block.z), r.dynamic_smem));
  return out;
}

// Every launcher with fake (never dereferenced, 16-byte aligned) pointers in dry mode: the launches it makes.
py::list dry(const std::string& launcher, int dtype, const py::tuple& shape, bool q_stats, int64_t R) {
  const DType d = static_cast<DType>(dtype);
  const Shape s = shape_of(shape);
  const View t{reinterpret_cast<void*>(uintptr_t(1) << 32), s.C * s.P, s.interleaved ? 1 : s.P,
                  s.interleaved ? s.C : 1};
  void* const p = reinterpret_cast<void*>(uintptr_t(1) << 33);
  lk_emu::take_log();
  lk_emu::set_dry(true);
  cudaError_t err = cudaSuccess;
  if (launcher == "channel_stats") {
    err = lk::cuda::channel_stats(d, t, s, p, p, p, nullptr);
  } else if (launcher == "combination_coefficients") {
    const lk::cuda::MlpWeights w{p, p, p, p, p, p, p, p, R};
    err = lk::cuda::combination_coefficients(d, t, s, w, p, p, p, p, nullptr);
  } else if (launcher == "coefficients_from_stats") {
    const lk::cuda::MlpWeights w{p, p, p, p, p, p, p, p, R};
    err = lk::cuda::coefficients_from_stats(d == DType::F64 ? DType::F64 : DType::F32, p, p, s.N, s.C, w, p,
                                            nullptr);
  } else if (launcher == "channel_stats_backward") {
    err = lk::cuda::channel_stats_backward(d, t, t, s, p, p, p, nullptr);
  } else if (launcher == "butterfly") {
    err = lk::cuda::butterfly(d, t, t, t, t, s, {p, p, p, p}, q_stats ? p : nullptr, q_stats ? p : nullptr, p,
                              nullptr);
  } else if (launcher == "butterfly_backward") {
    err = lk::cuda::butterfly_backward(d, t, t, t, t, t, t, s, {p, p, p, p}, q_stats ? p : nullptr,
                                       q_stats ? p : nullptr, q_stats ? p : nullptr, p, p, nullptr);
  } else {
    lk_emu::set_dry(false);
    throw std::invalid_argument("lk_cuda_emu.dry: unknown launcher " + launcher);
  }
  lk_emu::set_dry(false);
  py::list log = launch_log();
  check(err, launcher.c_str());
  return log;
}

}  // namespace

PYBIND11_MODULE(lk_cuda_emu, m) {
  m.doc() = "lattice_kernels' CUDA kernels executed on the CPU (tools/cuda_emu)";

  m.def("workspace_bytes", [](const std::string& which, int dtype, const py::tuple& shape) {
    const DType d = static_cast<DType>(dtype);
    const Shape s = shape_of(shape);
    if (which == "stats") return lk::cuda::stats_workspace_bytes(d, s);
    if (which == "butterfly") return lk::cuda::butterfly_workspace_bytes(d, s);
    if (which == "butterfly_backward") return lk::cuda::butterfly_backward_workspace_bytes(d, s);
    throw std::invalid_argument("lk_cuda_emu.workspace_bytes: unknown " + which);
  });

  m.def("channel_stats", [](int dtype, const py::tuple& shape, const py::tuple& x, py::array mean, py::array stdv) {
    Arena a;
    const DType d = static_cast<DType>(dtype);
    const Shape s = shape_of(shape);
    const View xt = tensor(a, x, d);
    check(lk::cuda::channel_stats(d, xt, s, a.get(mean), a.get(stdv), a.scratch(lk::cuda::stats_workspace_bytes(d, s)),
                                  nullptr),
          "channel_stats");
    a.copy_back();
  });

  m.def("combination_coefficients", [](int dtype, const py::tuple& shape, const py::tuple& x,
                                       const std::vector<py::array>& weights, int64_t R, py::array cc, py::array mean,
                                       py::array stdv) {
    Arena a;
    const DType d = static_cast<DType>(dtype);
    const Shape s = shape_of(shape);
    if (weights.size() != 8) throw std::invalid_argument("lk_cuda_emu: 8 weight arrays");
    const lk::cuda::MlpWeights w{a.get(weights[0]), a.get(weights[1]), a.get(weights[2]), a.get(weights[3]),
                                 a.get(weights[4]), a.get(weights[5]), a.get(weights[6]), a.get(weights[7]), R};
    const View xt = tensor(a, x, d);
    check(lk::cuda::combination_coefficients(d, xt, s, w, a.get(cc), a.get(mean), a.get(stdv),
                                             a.scratch(lk::cuda::stats_workspace_bytes(d, s)), nullptr),
          "combination_coefficients");
    a.copy_back();
  });

  m.def("coefficients_from_stats", [](int stats_dtype, py::array mean, py::array stdv,
                                      const std::vector<py::array>& weights, int64_t R, py::array cc) {
    Arena a;
    const DType d = static_cast<DType>(stats_dtype);
    if (weights.size() != 8) throw std::invalid_argument("lk_cuda_emu: 8 weight arrays");
    if (mean.ndim() != 2) throw std::invalid_argument("lk_cuda_emu: mean must be (N, C)");
    const lk::cuda::MlpWeights w{a.get(weights[0]), a.get(weights[1]), a.get(weights[2]), a.get(weights[3]),
                                 a.get(weights[4]), a.get(weights[5]), a.get(weights[6]), a.get(weights[7]), R};
    check(lk::cuda::coefficients_from_stats(d, a.get(mean), a.get(stdv), mean.shape(0), mean.shape(1), w, a.get(cc),
                                            nullptr),
          "coefficients_from_stats");
    a.copy_back();
  });

  m.def("channel_stats_backward", [](int dtype, const py::tuple& shape, const py::tuple& x, const py::tuple& dx,
                                     py::array ca, py::array cb, py::array mean) {
    Arena a;
    const DType d = static_cast<DType>(dtype);
    const View xt = tensor(a, x, d), dt = tensor(a, dx, d);
    check(lk::cuda::channel_stats_backward(d, xt, dt, shape_of(shape), a.get(ca), a.get(cb), a.get(mean), nullptr),
          "channel_stats_backward");
    a.copy_back();
  });

  m.def("butterfly", [](int dtype, const py::tuple& shape, const py::tuple& x1, const py::tuple& x2, const py::tuple& p,
                        const py::tuple& q, const std::vector<std::optional<py::array>>& coefs,
                        std::optional<py::array> mean_q, std::optional<py::array> std_q) {
    Arena a;
    const DType d = static_cast<DType>(dtype);
    const Shape s = shape_of(shape);
    const View t1 = tensor(a, x1, d), t2 = tensor(a, x2, d), tp = tensor(a, p, d), tq = tensor(a, q, d);
    check(lk::cuda::butterfly(d, t1, t2, tp, tq, s, coefficients(a, coefs), plain(a, mean_q), plain(a, std_q),
                              a.scratch(mean_q ? lk::cuda::butterfly_workspace_bytes(d, s) : 0), nullptr),
          "butterfly");
    a.copy_back();
  });

  m.def("butterfly_backward", [](int dtype, const py::tuple& shape, const py::tuple& dp, const py::tuple& dq,
                                 const py::tuple& x1, const py::tuple& x2, const py::tuple& dx1, const py::tuple& dx2,
                                 const std::vector<std::optional<py::array>>& coefs, std::optional<py::array> gm,
                                 std::optional<py::array> bs, std::optional<py::array> mq, py::array sums) {
    Arena a;
    const DType d = static_cast<DType>(dtype);
    const Shape s = shape_of(shape);
    const View tdp = tensor(a, dp, d), tdq = tensor(a, dq, d), t1 = tensor(a, x1, d), t2 = tensor(a, x2, d),
                  td1 = tensor(a, dx1, d), td2 = tensor(a, dx2, d);
    check(lk::cuda::butterfly_backward(d, tdp, tdq, t1, t2, td1, td2, s, coefficients(a, coefs), plain(a, gm),
                                       plain(a, bs), plain(a, mq), a.get(sums),
                                       a.scratch(lk::cuda::butterfly_backward_workspace_bytes(d, s)), nullptr),
          "butterfly_backward");
    a.copy_back();
  });

  m.def("dry", &dry, py::arg("launcher"), py::arg("dtype"), py::arg("shape"), py::arg("q_stats") = true,
        py::arg("R") = 4, "The launches (kernel, grid, block, dynamic smem) a launcher makes, checked, not run.");
  m.def("launches", &launch_log, "The launches since the last call (kernel, grid, block, dynamic smem).");
  m.def("set_dry", &lk_emu::set_dry, "True: launches are checked and logged, not run.");
  m.def("set_seed", &lk_emu::set_seed, "0: threads and blocks in index order; else a shuffled order from the seed.");

  m.def("set_tracing", &lk_emu::set_tracing,
        "True: record every global access (LK_LOAD / LK_STORE) of the launches that follow; clears the trace.");
  m.def("take_trace", [] {
    const std::vector<lk_emu::Access> t = lk_emu::take_trace();
    const py::ssize_t n = py::ssize_t(t.size());
    py::array_t<uint32_t> launch(n), block(n), thread(n), site(n), seq(n), bytes(n), store(n);
    py::array_t<uint64_t> address(n);
    for (py::ssize_t i = 0; i < n; ++i) {
      const lk_emu::Access& a = t[size_t(i)];
      launch.mutable_data()[i] = a.launch;
      block.mutable_data()[i] = a.block;
      thread.mutable_data()[i] = a.thread;
      site.mutable_data()[i] = a.site;
      seq.mutable_data()[i] = a.seq;
      bytes.mutable_data()[i] = a.bytes;
      address.mutable_data()[i] = a.address;
      store.mutable_data()[i] = a.store;
    }
    py::list sites;
    for (const auto& st : lk_emu::trace_sites()) sites.append(py::make_tuple(st.file, st.line));
    py::dict d;
    d["launch"] = launch;
    d["block"] = block;
    d["thread"] = thread;
    d["site"] = site;
    d["seq"] = seq;
    d["bytes"] = bytes;
    d["address"] = address;
    d["store"] = store;
    d["kernels"] = lk_emu::trace_kernels();
    d["sites"] = sites;
    return d;
  }, "The recorded accesses as arrays (launch, block, thread, site, seq, bytes, address, store), with the "
     "launches' kernel names and the sites' (file, line); empties the trace.");

  m.def("sample", [](const std::string& name, py::array_t<float, py::array::c_style> in,
                     py::array_t<float, py::array::c_style> out, const std::vector<int64_t>& cfg) {
    Arena a;
    float* pi = reinterpret_cast<float*>(a.get(in));
    float* po = reinterpret_cast<float*>(a.get(out));
    check(lk_run_sample(name, pi, po, in.size(), cfg), name.c_str());
    a.copy_back();
  });

  m.def("f32_to_f16_bits", [](py::array_t<float, py::array::c_style> x) {
    py::array_t<uint16_t> r(x.size());
    for (py::ssize_t i = 0; i < x.size(); ++i) r.mutable_data()[i] = __float2half_rn(x.data()[i]).bits;
    return r;
  });
  m.def("f32_to_bf16_bits", [](py::array_t<float, py::array::c_style> x) {
    py::array_t<uint16_t> r(x.size());
    for (py::ssize_t i = 0; i < x.size(); ++i) r.mutable_data()[i] = __float2bfloat16_rn(x.data()[i]).bits;
    return r;
  });
  m.def("f16_bits_to_f32", [](py::array_t<uint16_t, py::array::c_style> x) {
    py::array_t<float> r(x.size());
    for (py::ssize_t i = 0; i < x.size(); ++i) r.mutable_data()[i] = __half2float(__half{x.data()[i]});
    return r;
  });
}
