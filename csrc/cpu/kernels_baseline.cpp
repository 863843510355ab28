// The CPU kernels for the compiler's baseline target (x86-64 SSE2, or the aarch64 baseline).
#define LK_ISA_NS isa_baseline
#include "kernels.h"
#include "kernels_impl.h"
#include "conv3x3_impl.h"
