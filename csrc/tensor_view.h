// The torch-free description of an operand that the CPU kernels, the CUDA launchers and their bindings share: its
// element type, and a 4-D tensor (N, C, H, W) seen as (N, C, P = H*W) with element strides (sn, sc, sp).
#pragma once
#include <cstdint>

namespace lk {

enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

struct View {
  void* data = nullptr;
  int64_t sn = 0, sc = 0, sp = 0;
};

}  // namespace lk
