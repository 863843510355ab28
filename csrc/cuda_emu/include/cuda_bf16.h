// CPU execution harness: stands in for the CUDA toolkit header of the same name (see lk_cuda_emu.h).
#pragma once
#include "lk_cuda_emu.h"
