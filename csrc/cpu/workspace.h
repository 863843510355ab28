// The CPU workspace (workspace.cpp): a caching CPU allocator installed for the duration of workspace scopes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lk {
namespace cpu {

struct WorkspaceInfo {
  size_t live_bytes;    // blocks handed out and not yet freed
  size_t cached_bytes;  // freed blocks kept for reuse
  size_t peak_bytes;    // the larger of the last and this scope's peak of bytes made live during it
  uint64_t hits, misses, evictions;
  int depth;            // open scopes
  bool installed;       // whether the workspace is c10's CPU allocator (from the first scope on)
};

// Opens a scope on this thread (nested and concurrent scopes are counted); returns false, opening nothing, when
// the workspace is not c10's CPU allocator (another one was installed before).
bool workspace_enter();
// Closes a scope of this thread; the last one open releases the blocks its forwards did not use.
void workspace_exit();
// Releases every cached block.
void workspace_release();
WorkspaceInfo workspace_info();

}  // namespace cpu
}  // namespace lk
