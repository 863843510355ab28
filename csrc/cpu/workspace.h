// The CPU workspace (workspace.cpp): a caching CPU allocator installed for the duration of workspace scopes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lk {
namespace cpu {

struct WorkspaceInfo {
  size_t live_bytes;    // blocks handed out and not yet freed
  size_t cached_bytes;  // freed blocks kept for reuse
  size_t peak_bytes;    // the allowance: the larger of the last scope's and this scope's peak of live bytes
  uint64_t hits, misses, evictions;
  int depth;            // open scopes
  bool installed;       // whether the open scopes' allocator is in place (false: one of higher priority is)
};

// Opens a scope (nested and concurrent scopes are counted); returns whether the workspace allocator is in place.
bool workspace_enter();
// Closes a scope; the last one restores the previous allocator and releases the blocks its forwards did not use.
void workspace_exit();
// Releases every cached block.
void workspace_release();
WorkspaceInfo workspace_info();

}  // namespace cpu
}  // namespace lk
