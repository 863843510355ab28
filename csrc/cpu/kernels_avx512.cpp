// The CPU kernels compiled for AVX-512 (F, VL, BW, DQ) with 64-byte vectors (16 floats); selected at run time when
// the CPU has them. The standard headers are included before the target pragma so that nothing they define is
// compiled for AVX-512.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <type_traits>

#include "kernel_args.h"
#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#define LK_ISA_NS isa_avx512
#define LK_VEC_BYTES 64
#define LK_STREAM_STORES
#include "kernels.h"
#include "kernel_common.h"
#include "channel_stats_kernels.h"
#include "butterfly_kernels.h"
#include "conv3x3_kernels.h"
#pragma GCC pop_options
