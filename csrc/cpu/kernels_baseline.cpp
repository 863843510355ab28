// The CPU kernels for the compiler's baseline target (x86-64 SSE2, or the aarch64 baseline).
#define LK_ISA_NS isa_baseline
#include "kernels.h"
#include "kernel_common.h"
#include "channel_stats_kernels.h"
#include "butterfly_kernels.h"
#include "conv3x3_kernels.h"
