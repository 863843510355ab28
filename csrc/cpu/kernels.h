// Entry points of the torch-free CPU kernels, one set per instruction set (see kernel_common.h).
#pragma once
#include "kernel_args.h"

namespace lk {

struct KernelSet {
  const char* isa;
  void (*stats_partials)(const StatsArgs&, int64_t, int64_t, void*);
  void (*butterfly_forward)(const ButterflyArgs&, int64_t, int64_t, void*);
  void (*butterfly_backward)(const ButterflyBackwardArgs&, int64_t, int64_t, void*);
  void (*stats_backward)(const StatsBackwardArgs&, int64_t, int64_t);
  void (*conv3x3_tiles)(const Conv3x3Args&, int64_t, int64_t, void*);
  void (*conv3x3_weight_grad_chunks)(const Conv3x3WeightGradArgs&, int64_t, int64_t, void*);
  // bf16 conv3x3 as a direct convolution (the "amx" set; null elsewhere, where bf16 goes through the Winograd).
  void (*conv3x3_bf16_bands)(const Conv3x3DirectArgs&, int64_t, int64_t, void*) = nullptr;
  // Its weight and bias gradients (the "amx" set; null elsewhere).
  void (*conv3x3_bf16_weight_grad_chunks)(const Conv3x3DirectWeightGradArgs&, int64_t, int64_t, void*) = nullptr;
};

#define LK_DECLARE_KERNELS(ns)                                                      \
  namespace ns {                                                                    \
  void stats_partials(const StatsArgs&, int64_t, int64_t, void*);                   \
  void butterfly_forward(const ButterflyArgs&, int64_t, int64_t, void*);            \
  void butterfly_backward(const ButterflyBackwardArgs&, int64_t, int64_t, void*);   \
  void stats_backward(const StatsBackwardArgs&, int64_t, int64_t);                  \
  void conv3x3_tiles(const Conv3x3Args&, int64_t, int64_t, void*);                   \
  void conv3x3_weight_grad_chunks(const Conv3x3WeightGradArgs&, int64_t, int64_t, void*); \
  }
LK_DECLARE_KERNELS(isa_baseline)
#if defined(LK_HAVE_AVX2)
LK_DECLARE_KERNELS(isa_avx2)
LK_DECLARE_KERNELS(isa_avx512)
namespace isa_amx {
bool usable();  // AMX-BF16, AVX512_BF16, the OS's tile state, and (Linux) this process's permission to use it
void conv3x3_bf16_bands(const Conv3x3DirectArgs&, int64_t, int64_t, void*);
void conv3x3_bf16_weight_grad_chunks(const Conv3x3DirectWeightGradArgs&, int64_t, int64_t, void*);
}  // namespace isa_amx
#endif
#undef LK_DECLARE_KERNELS

}  // namespace lk
