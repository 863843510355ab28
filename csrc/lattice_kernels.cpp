// The op schemas of the lattice_kernels namespace, in one place, and the Python module that loads them.
// Implementations are registered per dispatch key: cpu/ops_cpu.cpp (CPU), cuda/ops_cuda.cpp (CUDA, when built);
// fake (meta) implementations and autograd live in lattice_kernels/ops/ (Python).
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu/workspace.h"

namespace lk {
const char* cpu_isa_name();
namespace cpu {
std::vector<std::string> supported_isas();
bool has_bf16_arithmetic();
std::string choose_isa(const std::string& want, const std::vector<std::pair<std::string, bool>>& choices);
}
}

// Every op takes NCHW, channels_last or channel-sliced inputs and gives outputs in the input's memory format, so
// Inductor may hand it tensors in whatever layout it chose (flexible_layout): with the default constraint it would
// transpose the channels_last activations of its convolutions back to NCHW around every call (measured: a 13 ms
// transpose per Lattice Block at 1x64x180x320 on the 2-core CPU).
static const std::vector<at::Tag> kTags = {at::Tag::flexible_layout, at::Tag::pt2_compliant_tag};

TORCH_LIBRARY(lattice_kernels, m) {
  // mean, std over H*W per (n, c); std unbiased. Outputs (N, C) float32 (float64 for float64 x).
  m.def("channel_stats(Tensor x) -> (Tensor, Tensor)", kTags);
  m.def("channel_stats_backward(Tensor grad_mean, Tensor grad_std, Tensor x, Tensor mean, Tensor std) -> Tensor", kTags);
  // cc = 0.5 * (sigmoid(w2m relu(w1m mean + b1m) + b2m) + sigmoid(w2s relu(w1s std + b1s) + b2s)); returns
  // (cc, mean, std). Weights are 2-D: w1 (C/r, C), w2 (C, C/r).
  m.def(
      "combination_coefficients(Tensor x, Tensor w1m, Tensor b1m, Tensor w2m, Tensor b2m, Tensor w1s, Tensor b1s, "
      "Tensor w2s, Tensor b2s) -> (Tensor, Tensor, Tensor)", kTags);
  m.def(
      "combination_coefficients_backward(Tensor grad, Tensor x, Tensor mean, Tensor std, Tensor w1m, Tensor b1m, "
      "Tensor w2m, Tensor b2m, Tensor w1s, Tensor b1s, Tensor w2s, Tensor b2s) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)", kTags);
  // The same MLP on given (N, C) statistics (float32 or float64): cc (N, C); its backward gives (grad_mean,
  // grad_std, and the 8 weight gradients).
  m.def(
      "coefficients_from_stats(Tensor mean, Tensor std, Tensor w1m, Tensor b1m, Tensor w2m, Tensor b2m, Tensor w1s, "
      "Tensor b1s, Tensor w2s, Tensor b2s) -> Tensor", kTags);
  m.def(
      "coefficients_from_stats_backward(Tensor grad, Tensor mean, Tensor std, Tensor w1m, Tensor b1m, Tensor w2m, "
      "Tensor b2m, Tensor w1s, Tensor b1s, Tensor w2s, Tensor b2s) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)", kTags);
  // p = alpha1*x1 + alpha2*x2, q = beta1*x1 + beta2*x2 with (N, C) coefficients (absent = 1). Returns
  // (p, q, mean_q, std_q); the statistics are empty unless q_stats.
  m.def(
      "butterfly(Tensor x1, Tensor x2, Tensor? alpha1, Tensor? alpha2, Tensor? beta1, Tensor? beta2, bool q_stats) "
      "-> (Tensor, Tensor, Tensor, Tensor)", kTags);
  // The same, p and q written to channels [0, C) and [C, 2C) of one new (N, 2C, H, W) tensor: (pq, mean_q, std_q).
  m.def(
      "butterfly_stacked(Tensor x1, Tensor x2, Tensor? alpha1, Tensor? alpha2, Tensor? beta1, Tensor? beta2, "
      "bool q_stats) -> (Tensor, Tensor, Tensor)", kTags);
  // The same into a caller's (N, 2C, H, W) buffer: (mean_q, std_q).
  m.def(
      "butterfly_out(Tensor x1, Tensor x2, Tensor? alpha1, Tensor? alpha2, Tensor? beta1, Tensor? beta2, "
      "bool q_stats, Tensor(a!) out) -> (Tensor, Tensor)", kTags);
  // (dx1, dx2, dalpha1, dalpha2, dbeta1, dbeta2); the gradient of an absent coefficient is an empty tensor.
  m.def(
      "butterfly_backward(Tensor grad_p, Tensor grad_q, Tensor? grad_mean_q, Tensor? grad_std_q, Tensor x1, "
      "Tensor x2, Tensor? alpha1, Tensor? alpha2, Tensor? beta1, Tensor? beta2, Tensor? mean_q, Tensor? std_q) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)", kTags);
  // y = conv2d(x, weight, bias, stride 1, padding 1), then leaky_relu(y, negative_slope) when it is given (>= 0).
  // weight (Cout, Cin, 3, 3). CPU only (Winograd F(4x4, 3x3)); the GPU backends use cuDNN's convolution.
  m.def("conv3x3(Tensor x, Tensor weight, Tensor? bias, float? negative_slope) -> Tensor", kTags);
  // (d loss / d weight, d loss / d bias) of conv3x3 (stride 1, padding 1) given x (N, Cin, H, W) and grad
  // (N, Cout, H, W): (Cout, Cin, 3, 3) and (Cout,) in x's dtype. CPU only (Winograd F(4x4, 3x3), the adjoint of
  // conv3x3's; the bias gradient is the sum of grad over (N, H, W)); used by conv3x3's backward.
  m.def("conv3x3_weight_grad(Tensor x, Tensor grad) -> (Tensor, Tensor)", kTags);
}

namespace {

PyObject* cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(lk::cpu_isa_name()); }

PyObject* cpu_bf16_arithmetic(PyObject*, PyObject*) { return PyBool_FromLong(lk::cpu::has_bf16_arithmetic()); }

PyObject* cpu_isas(PyObject*, PyObject*) {
  const std::vector<std::string> names = lk::cpu::supported_isas();
  PyObject* out = PyTuple_New(static_cast<Py_ssize_t>(names.size()));
  for (size_t i = 0; i < names.size(); ++i)
    PyTuple_SET_ITEM(out, static_cast<Py_ssize_t>(i), PyUnicode_FromString(names[i].c_str()));
  return out;
}

// choose_cpu_isa(want: str, choices: sequence of (name, runs: bool)) -> str: the rule kernels() applies to
// LATTICE_KERNELS_CPU_ISA and this CPU's sets, on sets given by the caller (tests: CPUs this machine is not).
PyObject* choose_cpu_isa(PyObject*, PyObject* args) {
  const char* want = nullptr;
  PyObject* seq = nullptr;
  if (!PyArg_ParseTuple(args, "sO", &want, &seq)) return nullptr;
  PyObject* fast = PySequence_Fast(seq, "choices must be a sequence of (name, runs) pairs");
  if (fast == nullptr) return nullptr;
  std::vector<std::pair<std::string, bool>> choices;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
    const char* name = nullptr;
    int ok = 0;
    if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "sp", &name, &ok)) {
      Py_DECREF(fast);
      PyErr_Clear();
      PyErr_SetString(PyExc_TypeError, "choices must be a sequence of (name: str, runs: bool) tuples");
      return nullptr;
    }
    choices.emplace_back(name, ok != 0);
  }
  Py_DECREF(fast);
  try {
    return PyUnicode_FromString(lk::cpu::choose_isa(want, choices).c_str());
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* cuda_built(PyObject*, PyObject*) {
#if defined(LK_WITH_CUDA)
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

// The CPU workspace's scope, for lattice_kernels.ops.workspace (see cpu/workspace.cpp).
PyObject* workspace_enter(PyObject*, PyObject*) { return PyBool_FromLong(lk::cpu::workspace_enter()); }

PyObject* workspace_exit(PyObject*, PyObject*) {
  try {
    lk::cpu::workspace_exit();
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* workspace_release(PyObject*, PyObject*) {
  lk::cpu::workspace_release();
  Py_RETURN_NONE;
}

PyObject* workspace_info(PyObject*, PyObject*) {
  const lk::cpu::WorkspaceInfo i = lk::cpu::workspace_info();
  return Py_BuildValue("{s:n,s:n,s:n,s:K,s:K,s:K,s:i,s:O}", "live_bytes", static_cast<Py_ssize_t>(i.live_bytes),
                       "cached_bytes", static_cast<Py_ssize_t>(i.cached_bytes), "peak_bytes",
                       static_cast<Py_ssize_t>(i.peak_bytes), "hits", static_cast<unsigned long long>(i.hits),
                       "misses", static_cast<unsigned long long>(i.misses), "evictions",
                       static_cast<unsigned long long>(i.evictions), "depth", i.depth, "installed",
                       i.installed ? Py_True : Py_False);
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "Instruction set of the CPU kernels chosen at load time."},
    {"cpu_bf16_arithmetic", cpu_bf16_arithmetic, METH_NOARGS,
     "Whether this CPU has bf16 arithmetic (AVX512_BF16)."},
    {"cpu_isas", cpu_isas, METH_NOARGS, "Instruction sets of this build that this CPU runs, most capable first."},
    {"choose_cpu_isa", choose_cpu_isa, METH_VARARGS,
     "choose_cpu_isa(want, [(name, runs), ...]): the instruction-set rule of the CPU kernels, on given sets."},
    {"cuda_built", cuda_built, METH_NOARGS, "Whether the CUDA kernels were compiled into this build."},
    {"workspace_enter", workspace_enter, METH_NOARGS,
     "Opens a CPU workspace scope; returns whether its caching allocator is in place."},
    {"workspace_exit", workspace_exit, METH_NOARGS, "Closes a CPU workspace scope."},
    {"workspace_release", workspace_release, METH_NOARGS, "Frees every block the CPU workspace keeps."},
    {"workspace_info", workspace_info, METH_NOARGS, "The CPU workspace's counters (bytes, hits, misses, ...)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "lattice_kernels compiled ops", -1, methods,
                          nullptr,               nullptr, nullptr,                       nullptr};

}  // namespace

extern "C" PyObject* PyInit__C(void) { return PyModule_Create(&module_def); }
