// The CPU workspace: inside a workspace scope (opened by the library's modules around a forward on CPU tensors),
// the thread's large buffers (activations) come from blocks freed earlier in this forward or in the previous one
// instead of freshly mapped pages. glibc maps every buffer above its mmap threshold (up to 32 MiB, then always)
// afresh and unmaps it on free, so a plain process faults in each activation page by page; the inference runtimes
// keep arenas of their own for the same reason.
//
// Rules (the shared state under one mutex):
// - The workspace becomes c10's CPU allocator at the first scope, for the rest of the process, and only if torch's
//   default allocator is the one installed then (c10's allocator may not be swapped while other threads allocate,
//   and raw_deallocate frees with whatever allocator is installed at that moment).
// - Only requests of at least kMinBytes made on a thread inside one of its scopes are served from the workspace;
//   every other request goes to torch's default allocator, unchanged.
// - A request takes the smallest cached block of size in [n, n + n/8]; else a new block is allocated, after
//   evicting least recently freed blocks while the bytes held for the scope (cached, plus live ones made since the
//   outermost scope opened) would exceed the allowance: 1.25x the larger of the previous scope's peak of such live
//   bytes and this scope's. (With 1x, LatticeNet x4 at LR 320x180 missed 25 of its 114 requests per call in steady
//   state, as the sizes held at a call's end are not those needed at its peak; with 1.25x 8: five under 1 MiB,
//   two of the output's size (the output is freed outside the scope) and one other; 2-core EPYC, 2026-12-07, the
//   ops.cpu_workspace_info() counters.)
// - A block freed on a thread inside one of its scopes is cached; one freed elsewhere goes back to the system.
// - When the outermost scope ends, the cached blocks no forward of it used are released, then the least recently
//   freed ones until at most 1.25x that scope's peak is held.
// - Blocks made here are not reported to torch's memory profiler.
// - Its blocks are mapped and unmapped by the workspace itself (mmap, munmap), not taken from glibc: glibc raises its
//   mmap threshold to the size of each mapped block freed (up to 32 MiB), so blocks the workspace evicted were kept in
//   glibc's heap, resident, beside the ones it made next. LatticeNet x4 at LR 320x180 under bf16 autocast peaked at
//   79.4 MiB over the process's resident memory with glibc's blocks and at 68.5-69.1 MiB with its own (2-core EPYC,
//   2026-12-07; VmHWM of one call in a fresh process after a 16x16 call, measured by hand). In the peers memory
//   record's method (bench/peers_memory.py: 2 warm-up and 3 calls) the library's bf16 went from 118 to 83 MiB
//   (bench/results/peers-memory-cpu-amd-epyc-avx512-bf16-default-malloc.json and its 2026-12-07 version in git).
#include "workspace.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <new>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace lk {
namespace cpu {
namespace {

constexpr size_t kMinBytes = size_t(256) << 10;
constexpr size_t kPage = 4096;

struct CachedBlock {
  void* ptr;
  size_t bytes;
  uint64_t freed_at;  // a counter value: smaller = freed longer ago
  uint64_t epoch;     // the outermost scope that last used it
};

void release_block(void* ptr);

// Scopes open on this thread: only they are served from, and freed into, the workspace.
thread_local int t_depth = 0;

class WorkspaceAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (t_depth > 0 && n >= kMinBytes) {
      std::unique_lock<std::mutex> lock(mutex_);
      void* ptr = take((n + kPage - 1) / kPage * kPage);
      unmap_dropped(lock);
      return c10::DataPtr(ptr, ptr, &release_block, c10::Device(c10::kCPU));
    }
    return c10::GetDefaultCPUAllocator()->allocate(n);  // torch's own blocks, with its profiler reports
  }

  // raw_allocate / raw_deallocate (oneDNN's scratchpads) need one deleter for every block: release_block frees the
  // default allocator's blocks with free_cpu, as its own deleter does (without that deleter's profiler report).
  c10::DeleterFnPtr raw_deleter() const override { return &release_block; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  bool enter() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!tried_install_) {
      // Installed once, for the rest of the process, and only over torch's default allocator: swapping c10's
      // allocator while other threads allocate is not safe, and a block must be freed by the allocator that made
      // it whatever is installed by then (raw_deallocate looks the allocator up again; an allocator another library
      // installs after this one would be handed mapped blocks by oneDNN's raw_deallocate: not supported).
      tried_install_ = true;
      if (c10::GetCPUAllocator() == c10::GetDefaultCPUAllocator()) c10::SetCPUAllocator(this, 0);
      installed_ = c10::GetCPUAllocator() == this;
    }
    if (!installed_) return false;
    ++t_depth;
    if (depth_++ > 0) return true;
    ++epoch_;
    base_ = live_;
    peak_ = 0;
    return true;
  }

  void exit() {
    std::unique_lock<std::mutex> lock(mutex_);
    TORCH_CHECK(depth_ > 0 && t_depth > 0, "lattice_kernels: workspace_exit without a matching workspace_enter");
    --t_depth;
    if (--depth_ > 0) return;
    previous_peak_ = peak_;
    evict_if([&](const CachedBlock& b) { return b.epoch != epoch_; });
    evict_oldest_while([&] { return scope_live() + cached_ > allowance(peak_); });
    unmap_dropped(lock);
  }

  void free(void* ptr) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto it = sizes_.find(ptr);
      if (it != sizes_.end()) {
        const size_t bytes = it->second;
        live_ -= bytes;
        if (t_depth > 0) {
          cache_.push_back({ptr, bytes, ++clock_, epoch_});
          cached_ += bytes;
          return;
        }
        sizes_.erase(it);
        lock.unlock();
        unmap(ptr, bytes);  // one of ours freed outside a scope of this thread
        return;
      }
    }
    c10::free_cpu(ptr);  // a block of the default allocator
  }

  void release() {
    std::unique_lock<std::mutex> lock(mutex_);
    evict_if([](const CachedBlock&) { return true; });
    previous_peak_ = 0;
    unmap_dropped(lock);
  }

  WorkspaceInfo info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {live_, cached_, std::max(previous_peak_, peak_), hits_, misses_, evictions_, depth_, installed_};
  }

  // fork() child: the mutex may have been held by a thread that does not exist there, and no scope is open.
  void after_fork_in_child() {
    new (&mutex_) std::mutex();
    depth_ = 0;
    t_depth = 0;
  }

 private:
  // Called with the lock held: a block of `bytes` (a multiple of the page size), cached or new.
  void* take(size_t bytes) {
    void* ptr = nullptr;
    auto best = cache_.end();
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
      if (it->bytes >= bytes && it->bytes <= bytes + bytes / 8 && (best == cache_.end() || it->bytes < best->bytes))
        best = it;
    if (best != cache_.end()) {
      ptr = best->ptr;
      live_ += best->bytes;
      cached_ -= best->bytes;
      cache_.erase(best);
      ++hits_;
    } else {
      ++misses_;
      const size_t limit = allowance(std::max({previous_peak_, peak_, scope_live() + bytes}));
      evict_oldest_while([&] { return scope_live() + cached_ + bytes > limit; });
      ptr = map(bytes);
      sizes_[ptr] = bytes;
      live_ += bytes;
    }
    peak_ = std::max(peak_, scope_live());
    return ptr;
  }

  static size_t allowance(size_t peak) { return peak + peak / 4; }

  // Page-aligned (c10 asks for 64 bytes), zero-filled on first touch, returned to the system by unmap.
  // (Unlike c10::alloc_cpu, no 2 MiB alignment and madvise for THP_MEM_ALLOC_ENABLE, and no junk fill.)
  static void* map(size_t bytes) {
    void* ptr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(ptr != MAP_FAILED, "lattice_kernels CPU workspace: could not map ", bytes, " bytes (",
                std::strerror(errno), "); LATTICE_KERNELS_CPU_WORKSPACE=0 turns the workspace off");
    return ptr;
  }

  static void unmap(void* ptr, size_t bytes) {
    const int rc = munmap(ptr, bytes);
    TORCH_INTERNAL_ASSERT(rc == 0, "lattice_kernels CPU workspace: munmap failed: ", std::strerror(errno));
  }

  // The blocks dropped while the lock was held are unmapped after it is released: munmap of many MiB (TLB
  // shootdowns on every thread) would otherwise stall every CPU free in the process, which takes this lock. Their
  // addresses cannot be handed out again before they are unmapped.
  void unmap_dropped(std::unique_lock<std::mutex>& lock) {
    std::vector<std::pair<void*, size_t>> blocks;
    blocks.swap(dropped_);
    lock.unlock();
    for (const auto& [ptr, bytes] : blocks) unmap(ptr, bytes);
  }

  // Live bytes of blocks made since the outermost scope opened (those alive before it, kept outputs say, not counted).
  size_t scope_live() const { return live_ > base_ ? live_ - base_ : 0; }

  template <class Cond> void evict_oldest_while(Cond cond) {
    while (!cache_.empty() && cond())
      drop(std::min_element(cache_.begin(), cache_.end(),
                            [](const CachedBlock& a, const CachedBlock& b) { return a.freed_at < b.freed_at; }));
  }

  void drop(std::vector<CachedBlock>::iterator it) {
    cached_ -= it->bytes;
    sizes_.erase(it->ptr);
    dropped_.emplace_back(it->ptr, it->bytes);
    cache_.erase(it);
    ++evictions_;
  }

  template <class Pred> void evict_if(Pred pred) {
    for (size_t i = cache_.size(); i-- > 0;)
      if (pred(cache_[i])) drop(cache_.begin() + static_cast<std::ptrdiff_t>(i));
  }

  std::mutex mutex_;
  bool tried_install_ = false, installed_ = false;
  int depth_ = 0;
  uint64_t epoch_ = 0, clock_ = 0;
  size_t live_ = 0, cached_ = 0, peak_ = 0, previous_peak_ = 0, base_ = 0;
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
  std::vector<CachedBlock> cache_;
  std::vector<std::pair<void*, size_t>> dropped_;  // taken out of the cache, to unmap once the lock is released
  std::unordered_map<void*, size_t> sizes_;
};

// Never destroyed: blocks may be freed by tensors that outlive everything else, at interpreter exit.
WorkspaceAllocator& workspace() {
  static auto* w = [] {
    auto* a = new WorkspaceAllocator();
    pthread_atfork(nullptr, nullptr, [] { workspace().after_fork_in_child(); });
    return a;
  }();
  return *w;
}

void release_block(void* ptr) { workspace().free(ptr); }

}  // namespace

bool workspace_enter() { return workspace().enter(); }
void workspace_exit() { workspace().exit(); }
void workspace_release() { workspace().release(); }
WorkspaceInfo workspace_info() { return workspace().info(); }

}  // namespace cpu
}  // namespace lk
