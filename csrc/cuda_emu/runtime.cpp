// The CPU execution harness's runtime: fibers (one per CUDA thread of a block), the scheduler, barriers, warp
// exchanges, launch checks and the launch log. See include/lk_cuda_emu.h.
//
// Context switches: a hand-written x86-64 switch (callee-saved registers, MXCSR and the x87 control word), or
// ucontext's swapcontext elsewhere (or with -DLK_EMU_UCONTEXT). Under AddressSanitizer the switches are announced
// with __sanitizer_{start,finish}_switch_fiber; under ThreadSanitizer every fiber is a TSan fiber switched
// without synchronisation, and the happens-before edges a GPU guarantees are declared explicitly: kernel start ->
// every thread, __syncthreads (all arrivals -> all departures), warp exchanges (the lanes' arrivals -> their
// departures), every thread -> block end. TSan then reports two threads of a block touching the same word (in
// shared or global memory), one of them writing, with no barrier between: racecheck on the CPU.
#include "lk_cuda_emu.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define LK_EMU_ASAN 1
#endif
// Under ThreadSanitizer this file is compiled without -fsanitize=thread and with -DLK_EMU_TSAN: its own
// bookkeeping (shared by all fibers by design) is not the kernels' memory; it only declares the kernels' edges.
#if defined(__SANITIZE_THREAD__)
#error "compile the harness runtime without -fsanitize=thread, with -DLK_EMU_TSAN=1"
#endif
#if defined(LK_EMU_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#if !defined(__x86_64__) && !defined(LK_EMU_UCONTEXT)
#define LK_EMU_UCONTEXT 1
#endif
#if defined(LK_EMU_UCONTEXT)
#include <ucontext.h>
#endif

#include "lk_cuda_emu_api.h"

#if !defined(LK_EMU_UCONTEXT)
// void lk_emu_switch(void** save_sp, void* new_sp): save the callee-saved state on this stack, store the stack
// pointer in *save_sp, continue on new_sp (a stack saved by this function, or a fresh frame from prepare()).
asm(R"(
.text
.globl lk_emu_switch
.type lk_emu_switch,@function
lk_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size lk_emu_switch,.-lk_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
extern "C" void lk_emu_switch(void** save_sp, void* new_sp);
#endif

namespace lk_emu {

thread_local ThreadCtx* g_thread = nullptr;
thread_local uint3 g_block_idx{0, 0, 0};
thread_local dim3 g_block_dim;
thread_local dim3 g_grid_dim;

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber (sanitizer frames are large); reserved, touched lazily

enum class State { Runnable, Waiting, Done };

struct Fiber {
  ThreadCtx ctx;
  int linear = 0;
  State state = State::Done;
  unsigned char* stack = nullptr;
#if defined(LK_EMU_UCONTEXT)
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
  bool fresh = true;  // needs a fresh entry frame (first use, or abandoned by a failed block)
#if defined(LK_EMU_ASAN)
  void* fake_stack = nullptr;
#endif
#if defined(LK_EMU_TSAN)
  void* tsan = nullptr;
#endif
};

struct Warp {
  unsigned exists = 0;    // lanes that exist in the block
  unsigned live = 0;      // lanes not yet exited
  unsigned arrived = 0;   // lanes waiting at the current warp sync
  unsigned mask = 0;      // the mask of the current warp sync
  unsigned generation = 0;
  uint64_t slot[2][32] = {};  // exchange slots, by generation parity
  char tsan_sync[2];
};

struct Block {
  int threads = 0;
  int live = 0;
  int arrived = 0;
  unsigned generation = 0;
  char tsan_sync[2];
  std::vector<Warp> warps;
  std::vector<unsigned char> dyn_smem;
};

struct Scheduler {
  std::vector<std::unique_ptr<Fiber>> fibers;
  // Runnable fibers: a ring of capacity = threads (each fiber is queued at most once). Fixed storage, so that
  // the fibers never allocate or move harness memory (which TSan's interceptors would see).
  std::vector<int> runq;
  size_t head = 0, count = 0;
  Block block;
  const std::function<void()>* body = nullptr;
  std::string error;
  std::mt19937_64 rng;
  uint64_t seed = 0;
  Fiber* running = nullptr;
#if defined(LK_EMU_UCONTEXT)
  ucontext_t main_uc;
#else
  void* main_sp = nullptr;
#endif
#if defined(LK_EMU_ASAN)
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  void* main_fake_stack = nullptr;
  bool from_main = false;
#endif
#if defined(LK_EMU_TSAN)
  void* main_tsan = nullptr;
  char start_sync = 0, end_sync = 0;
#endif
};

thread_local Scheduler g_sched;
thread_local cudaError_t g_last_error = cudaSuccess;

// State shared by every thread of the process (the Python side reads it).
bool g_dry = false;
uint64_t g_seed = 0;
std::vector<LaunchRecord> g_log;
std::string g_last_failure;

// The access trace (tools/gpu_efficiency).
std::vector<Access> g_trace;
std::vector<std::string> g_trace_kernels;
std::vector<Site> g_sites;
std::map<std::pair<const char*, int>, uint32_t> g_site_ids;
std::unordered_map<uint64_t, uint32_t> g_seq;  // (thread, site) -> next sequence number, for the running block
uint64_t g_seq_block = ~uint64_t(0);

Fiber& current() { return *g_sched.running; }

void fail_in_kernel(const std::string& what);

// ---- switching ---------------------------------------------------------------------------------------------------
void fiber_main();

#if !defined(LK_EMU_UCONTEXT)
extern "C" void lk_emu_fiber_entry() { fiber_main(); }
#endif

// A fresh entry frame on the fiber's stack.
void prepare(Fiber& f) {
#if defined(LK_EMU_ASAN)
  __asan_unpoison_memory_region(f.stack, kStackBytes);
#endif
#if defined(LK_EMU_UCONTEXT)
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack;
  f.uc.uc_stack.ss_size = kStackBytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, fiber_main, 0);
#else
  // Top of stack, 16-aligned; the frame lk_emu_switch pops: mxcsr/x87 cw, r15..rbp (6), return address = entry,
  // then a zero "return address" of the entry function, so that rsp % 16 == 8 at its first instruction.
  auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(f.stack + kStackBytes) & ~uintptr_t(15)));
  uint64_t* sp = top - 2;
  *--sp = 0;                                                  // entry's return address (never used)
  *--sp = reinterpret_cast<uint64_t>(&lk_emu_fiber_entry);   // popped by ret
  for (int i = 0; i < 6; ++i) *--sp = 0;                      // rbp, rbx, r12..r15
  *--sp = 0x1F80ull | (0x037Full << 32);                      // MXCSR default, x87 control word default
  f.sp = sp;
#endif
  f.fresh = false;
}

// Scheduler -> fiber f.
void switch_to_fiber(Fiber& f) {
  Scheduler& s = g_sched;
  s.running = &f;
  g_thread = &f.ctx;
  if (f.fresh) prepare(f);
#if defined(LK_EMU_TSAN)
  __tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(LK_EMU_ASAN)
  s.from_main = true;
  __sanitizer_start_switch_fiber(&s.main_fake_stack, f.stack, kStackBytes);
#endif
#if defined(LK_EMU_UCONTEXT)
  swapcontext(&s.main_uc, &f.uc);
#else
  lk_emu_switch(&s.main_sp, f.sp);
#endif
#if defined(LK_EMU_ASAN)
  __sanitizer_finish_switch_fiber(s.main_fake_stack, nullptr, nullptr);
#endif
  s.running = nullptr;
  g_thread = nullptr;
}

// Fiber -> scheduler (the fiber resumes here when scheduled again).
// The next queued fiber (in order, or drawn with the seed), or nullptr.
Fiber* pop_next() {
  Scheduler& s = g_sched;
  if (s.count == 0 || !s.error.empty()) return nullptr;
  const size_t cap = s.runq.size();
  if (s.seed != 0) std::swap(s.runq[(s.head + s.rng() % s.count) % cap], s.runq[s.head]);
  const int i = s.runq[s.head];
  s.head = (s.head + 1) % cap;
  --s.count;
  return s.fibers[i].get();
}

// Records the stack bounds of the context that switched to this fiber, when it was the scheduler's (ASan).
void finish_switch_in_fiber(Fiber& f) {
#if defined(LK_EMU_ASAN)
  Scheduler& s = g_sched;
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(f.fake_stack, &bottom, &size);
  if (s.from_main) {
    s.main_stack_bottom = bottom;
    s.main_stack_size = size;
  }
  s.from_main = false;
#else
  (void)f;
#endif
}

// Fiber -> the next queued fiber directly (no detour through the scheduler), or -> the scheduler when none is
// queued; the fiber resumes here when scheduled again.
void yield_to_scheduler() {
  Scheduler& s = g_sched;
  Fiber& f = current();
  Fiber* g = pop_next();
  if (g == &f) return;  // released by its own arrival and next in line
  if (g != nullptr) {
    s.running = g;
    g_thread = &g->ctx;
    if (g->fresh) prepare(*g);
#if defined(LK_EMU_TSAN)
    __tsan_switch_to_fiber(g->tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(LK_EMU_ASAN)
    __sanitizer_start_switch_fiber(&f.fake_stack, g->stack, kStackBytes);
#endif
#if defined(LK_EMU_UCONTEXT)
    swapcontext(&f.uc, &g->uc);
#else
    lk_emu_switch(&f.sp, g->sp);
#endif
  } else {
#if defined(LK_EMU_TSAN)
    __tsan_switch_to_fiber(s.main_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(LK_EMU_ASAN)
    __sanitizer_start_switch_fiber(&f.fake_stack, s.main_stack_bottom, s.main_stack_size);
#endif
#if defined(LK_EMU_UCONTEXT)
    swapcontext(&f.uc, &s.main_uc);
#else
    lk_emu_switch(&f.sp, s.main_sp);
#endif
  }
  finish_switch_in_fiber(f);
}

void on_exit_thread();

// Every fiber runs this forever: one CUDA thread of a block per turn.
void fiber_main() {
#if defined(LK_EMU_ASAN)
  {
    const void* bottom = nullptr;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
    if (g_sched.from_main) {
      g_sched.main_stack_bottom = bottom;
      g_sched.main_stack_size = size;
    }
    g_sched.from_main = false;
  }
#endif
  for (;;) {
#if defined(LK_EMU_TSAN)
    __tsan_acquire(&g_sched.start_sync);
#endif
    (*g_sched.body)();
#if defined(LK_EMU_TSAN)
    __tsan_release(&g_sched.end_sync);
#endif
    on_exit_thread();
    yield_to_scheduler();
  }
}

// ---- barriers ------------------------------------------------------------------------------------------------------
enum class WaitKind { None, Block, Warp };
thread_local std::vector<WaitKind> g_wait;

void make_runnable(int i) {
  g_sched.fibers[i]->state = State::Runnable;
  g_wait[i] = WaitKind::None;
  Scheduler& s = g_sched;
  s.runq[(s.head + s.count++) % s.runq.size()] = i;
}

void try_release_block() {
  Block& b = g_sched.block;
  if (b.arrived == 0 || b.arrived < b.live) return;
  b.arrived = 0;
  ++b.generation;
  for (int i = 0; i < b.threads; ++i)
    if (g_wait[i] == WaitKind::Block) make_runnable(i);
}

void try_release_warp(int w) {
  Warp& wp = g_sched.block.warps[w];
  if (wp.arrived == 0 || (wp.arrived & wp.mask) != wp.mask) return;
  wp.arrived = 0;
  ++wp.generation;
  for (int l = 0; l < 32; ++l)
    if ((wp.mask >> l) & 1u) make_runnable(w * 32 + l);
}

void on_exit_thread() {
  Fiber& f = current();
  Block& b = g_sched.block;
  f.state = State::Done;
  --b.live;
  Warp& wp = b.warps[f.linear / 32];
  wp.live &= ~(1u << (f.linear % 32));
  try_release_block();
}

void fail_in_kernel(const std::string& what) {
  if (g_sched.error.empty()) g_sched.error = what;
  current().state = State::Done;
  current().fresh = true;  // abandoned mid-kernel: its stack is re-initialised before the next use
  yield_to_scheduler();
  std::abort();  // never resumed
}

std::string block_str() {
  return "block (" + std::to_string(g_block_idx.x) + ", " + std::to_string(g_block_idx.y) + ", " +
         std::to_string(g_block_idx.z) + ")";
}

std::string thread_str() {
  const uint3 t = current().ctx.tid;
  return "thread (" + std::to_string(t.x) + ", " + std::to_string(t.y) + ", " + std::to_string(t.z) + ") of " +
         block_str();
}

void warp_sync_impl(unsigned mask) {
  Fiber& f = current();
  Block& b = g_sched.block;
  const int w = f.linear / 32, lane = f.linear % 32;
  Warp& wp = b.warps[w];
  if ((mask >> lane & 1u) == 0)
    fail_in_kernel("warp intrinsic with a mask that excludes the calling lane, " + thread_str());
  if ((mask & ~wp.exists) != 0)
    fail_in_kernel("warp intrinsic with mask " + std::to_string(mask) + " naming lanes that do not exist, " +
                   thread_str());
  if ((mask & ~wp.live) != 0) fail_in_kernel("warp intrinsic waits for lanes that have exited, " + thread_str());
  if (wp.arrived != 0 && wp.mask != mask)
    fail_in_kernel("lanes of one warp meet at a warp intrinsic with different masks, " + thread_str());
  wp.mask = mask;
#if defined(LK_EMU_TSAN)
  void* sync = &wp.tsan_sync[wp.generation & 1];
  __tsan_release(sync);
#endif
  wp.arrived |= 1u << lane;
  f.state = State::Waiting;
  g_wait[f.linear] = WaitKind::Warp;
  try_release_warp(w);
  yield_to_scheduler();
#if defined(LK_EMU_TSAN)
  __tsan_acquire(sync);
#endif
}

}  // namespace

int lane_id() { return current().linear % 32; }

void syncthreads() {
  Fiber& f = current();
  Block& b = g_sched.block;
#if defined(LK_EMU_TSAN)
  void* sync = &b.tsan_sync[b.generation & 1];
  __tsan_release(sync);
#endif
  ++b.arrived;
  f.state = State::Waiting;
  g_wait[f.linear] = WaitKind::Block;
  try_release_block();
  yield_to_scheduler();
#if defined(LK_EMU_TSAN)
  __tsan_acquire(sync);
#endif
}

void syncwarp(unsigned mask) { warp_sync_impl(mask); }

// One warp sync per exchange: the slots alternate with the sync's generation, and a lane can only write the
// slots of generation g + 2 after every lane has passed the sync of g + 1, i.e. has read those of g.
uint64_t warp_exchange(unsigned mask, uint64_t bits, int src) {
  Fiber& f = current();
  Warp& wp = g_sched.block.warps[f.linear / 32];
  const int lane = f.linear % 32;
  uint64_t* slot = wp.slot[wp.generation & 1];
  slot[lane] = bits;
  warp_sync_impl(mask);  // every lane has deposited
  return (src >= 0 && src < 32 && ((mask >> src) & 1u)) ? slot[src] : bits;
}

void* dynamic_shared() { return g_sched.block.dyn_smem.data(); }

// ---- launches ------------------------------------------------------------------------------------------------------
namespace {

std::string dim_str(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// The launch checks of a GPU (compute capability 8.x/9.0), as a message, empty when the launch is valid.
std::string check_config(dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return "empty grid " + dim_str(grid);
  if (block.x == 0 || block.y == 0 || block.z == 0) return "empty block " + dim_str(block);
  if (threads > 1024) return "block " + dim_str(block) + " has " + std::to_string(threads) + " > 1024 threads";
  if (block.x > 1024 || block.y > 1024 || block.z > 64) return "block " + dim_str(block) + " exceeds (1024, 1024, 64)";
  if (grid.x > 2147483647u) return "gridDim.x = " + std::to_string(grid.x) + " > 2^31 - 1";
  if (grid.y > 65535) return "gridDim.y = " + std::to_string(grid.y) + " > 65535";
  if (grid.z > 65535) return "gridDim.z = " + std::to_string(grid.z) + " > 65535";
  if (smem > kMaxDynamicSmem)
    return "dynamic shared memory " + std::to_string(smem) + " bytes > 48 KiB (no opt-in)";
  return {};
}

void ensure_fibers(Scheduler& s, int n) {
  while (int(s.fibers.size()) < n) {
    auto f = std::make_unique<Fiber>();
    void* mem = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("lk_emu: cannot map a fiber stack");
    f->stack = static_cast<unsigned char*>(mem);
    f->linear = int(s.fibers.size());
#if defined(LK_EMU_TSAN)
    f->tsan = __tsan_create_fiber(0);
#endif
    s.fibers.push_back(std::move(f));
  }
  if (int(g_wait.size()) < n) g_wait.resize(n, WaitKind::None);
}

bool run_block(Scheduler& s, dim3 block, size_t smem) {
  Block& b = s.block;
  const int n = int(block.x * block.y * block.z);
  b.threads = b.live = n;
  b.arrived = 0;
  b.warps.assign((n + 31) / 32, Warp{});
  for (int w = 0; w < int(b.warps.size()); ++w) {
    const int lanes = std::min(32, n - 32 * w);
    b.warps[w].exists = b.warps[w].live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  }
  b.dyn_smem.assign(smem, 0xff);  // never zero: reading shared memory before writing it shows up
  s.runq.assign(n, 0);
  s.head = s.count = 0;
  for (int i = 0; i < n; ++i) {
    Fiber& f = *s.fibers[i];
    f.ctx.tid = uint3{unsigned(i % block.x), unsigned(i / block.x % block.y), unsigned(i / (block.x * block.y))};
    f.state = State::Runnable;
    g_wait[i] = WaitKind::None;
    s.runq[s.count++] = i;
  }
#if defined(LK_EMU_TSAN)
  __tsan_release(&s.start_sync);
#endif
  // The scheduler starts the first queued fiber; fibers then hand over to each other and come back here when
  // none is queued (all blocked, or done).
  while (Fiber* f = pop_next()) switch_to_fiber(*f);
#if defined(LK_EMU_TSAN)
  __tsan_acquire(&s.end_sync);
#endif
  if (s.error.empty() && b.live > 0) {
    int at_barrier = 0, at_warp = 0;
    for (int i = 0; i < n; ++i) {
      at_barrier += g_wait[i] == WaitKind::Block;
      at_warp += g_wait[i] == WaitKind::Warp;
    }
    s.error = "deadlock in block (" + std::to_string(g_block_idx.x) + ", " + std::to_string(g_block_idx.y) + ", " +
              std::to_string(g_block_idx.z) + "): " + std::to_string(at_barrier) + " threads wait at __syncthreads, " +
              std::to_string(at_warp) + " at a warp intrinsic, " + std::to_string(n - b.live) + " have exited";
  }
  if (!s.error.empty()) {
    for (int i = 0; i < n; ++i)
      if (s.fibers[i]->state != State::Done || g_wait[i] != WaitKind::None) s.fibers[i]->fresh = true;
    for (int i = 0; i < n; ++i) {
      s.fibers[i]->state = State::Done;
      g_wait[i] = WaitKind::None;
    }
    return false;
  }
  return true;
}

}  // namespace

uint16_t f32_to_f16_rn(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN, inf
  if (ax >= 0x477ff000u) return sign | 0x7c00;                                // >= 65520 rounds to inf
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half in units of 2^-24 (the scaling is exact)
    return sign | static_cast<uint16_t>(std::nearbyint(f32_from_bits(ax) * 16777216.0f));
  }
  uint32_t h = ((ax >> 23) - 112u) << 10 | ((ax & 0x7fffffu) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = std::ldexp(float(m), -24);  // subnormal or zero, exact
    return sign ? -v : v;
  }
  if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

std::string name_from_signature(const char* pretty_function) {
  const std::string f = pretty_function;
  const size_t b = f.find("Kernel = ");
  if (b == std::string::npos) return f;
  const size_t e = f.find_first_of(";]", b);
  return f.substr(b + 9, e - b - 9);
}

cudaError_t take_last_error() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t peek_last_error() { return g_last_error; }

bool g_tracing = false;

void record_access(const void* address, unsigned bytes, bool store, const char* file, int line) {
  if (g_thread == nullptr || g_trace_kernels.empty()) return;  // outside a traced kernel
  const uint64_t block = g_block_idx.x + uint64_t(g_grid_dim.x) * (g_block_idx.y + uint64_t(g_grid_dim.y) * g_block_idx.z);
  const uint32_t launch = uint32_t(g_trace_kernels.size() - 1);
  const uint64_t block_key = (uint64_t(launch) << 40) ^ block;
  if (block_key != g_seq_block) {
    g_seq.clear();
    g_seq_block = block_key;
  }
  const uint3 t = g_thread->tid;
  const uint32_t thread = t.x + g_block_dim.x * (t.y + g_block_dim.y * t.z);
  auto [it, fresh] = g_site_ids.try_emplace({file, line}, uint32_t(g_sites.size()));
  if (fresh) g_sites.push_back(Site{file, line});
  const uint32_t site = it->second;
  const uint32_t seq = g_seq[(uint64_t(thread) << 32) | site]++;
  g_trace.push_back(Access{launch, uint32_t(block), thread, site, seq, bytes, reinterpret_cast<uint64_t>(address),
                           store ? 1u : 0u});
}

cudaError_t launch(const char* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  g_log.push_back(LaunchRecord{kernel, grid, block, smem});
  if (g_tracing && !g_dry) g_trace_kernels.push_back(kernel);
  const std::string bad = check_config(grid, block, smem);
  if (!bad.empty()) {
    g_last_failure = std::string(kernel) + ": " + bad;
    return g_last_error = cudaErrorInvalidConfiguration;
  }
  if (g_dry) return cudaSuccess;
  Scheduler& s = g_sched;
  if (s.running != nullptr) throw std::logic_error("lk_emu: a kernel launched from inside a kernel");
  if (s.fibers.empty()) {
#if defined(LK_EMU_TSAN)
    s.main_tsan = __tsan_get_current_fiber();
#endif
  }
  const int n = int(block.x * block.y * block.z);
  ensure_fibers(s, n);
  s.body = &body;
  s.error.clear();
  s.seed = g_seed;
  s.rng.seed(g_seed);
  g_grid_dim = grid;
  g_block_dim = block;
  // Blocks in order, or in a shuffled order with a seed (blocks of a grid are unordered on a GPU).
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint64_t> order;
  if (g_seed != 0) {
    order.resize(blocks);
    for (uint64_t i = 0; i < blocks; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), s.rng);
  }
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t i = g_seed != 0 ? order[k] : k;
    g_block_idx = uint3{unsigned(i % grid.x), unsigned(i / grid.x % grid.y), unsigned(i / (uint64_t(grid.x) * grid.y))};
    if (!run_block(s, block, smem)) {
      g_last_failure = std::string(kernel) + ": " + s.error;
      s.body = nullptr;
      return g_last_error = cudaErrorLaunchFailure;
    }
  }
  s.body = nullptr;
  return cudaSuccess;
}

// ---- the Python side's view -----------------------------------------------------------------------------------------
void set_dry(bool dry) { g_dry = dry; }
void set_seed(uint64_t seed) { g_seed = seed; }
std::vector<LaunchRecord> take_log() {
  std::vector<LaunchRecord> r;
  r.swap(g_log);
  return r;
}
void set_tracing(bool on) {
  g_tracing = on;
  if (on) {
    g_trace.clear();
    g_trace_kernels.clear();
    g_seq.clear();
    g_seq_block = ~uint64_t(0);
  }
}
std::vector<Access> take_trace() {
  std::vector<Access> r;
  r.swap(g_trace);
  return r;
}
std::vector<std::string> trace_kernels() { return g_trace_kernels; }
std::vector<Site> trace_sites() { return g_sites; }
std::string last_failure() { return g_last_failure; }
void clear_failure() {
  g_last_failure.clear();
  g_last_error = cudaSuccess;
}

}  // namespace lk_emu
