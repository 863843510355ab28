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

// One recorded global access (see record_access in lk_cuda_emu.h).
struct Access {
  uint32_t launch;  // index into trace_kernels()
  uint32_t block;   // linear block index in the grid
  uint32_t thread;  // linear thread index in the block (warp = thread / 32)
  uint32_t site;    // index into trace_sites()
  uint32_t seq;     // the thread's how-many-th access at this site, from 0
  uint32_t bytes;
  uint64_t address;
  uint32_t store;
};
struct Site {
  std::string file;
  int line;
};
// Tracing on clears the trace; the launches' kernel names and the source lines are indexed by the records.
void set_tracing(bool on);
std::vector<Access> take_trace();
std::vector<std::string> trace_kernels();
std::vector<Site> trace_sites();

// Dry mode: launches are checked and logged, not run (kernel arguments are never dereferenced).
void set_dry(bool dry);
// 0: threads and blocks in index order; otherwise a shuffled order drawn from this seed.
void set_seed(uint64_t seed);
std::vector<LaunchRecord> take_log();
// The message of the last failed launch ("kernel: what"), and its reset.
std::string last_failure();
void clear_failure();

}  // namespace lk_emu
