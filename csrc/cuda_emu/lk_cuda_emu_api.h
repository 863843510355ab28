// The CPU execution harness seen from its driver (the Python binding): dry mode, scheduling seed, launch log.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lk_cuda_emu.h"

namespace lk_emu {

constexpr size_t kMaxDynamicSmem = 48 * 1024;

struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  size_t dynamic_smem;
};

// Dry mode: launches are checked and logged, not run (kernel arguments are never dereferenced).
void set_dry(bool dry);
// 0: threads and blocks in index order; otherwise a shuffled order drawn from this seed.
void set_seed(uint64_t seed);
std::vector<LaunchRecord> take_log();
// The message of the last failed launch ("kernel: what"), and its reset.
std::string last_failure();
void clear_failure();

}  // namespace lk_emu
