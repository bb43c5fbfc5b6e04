#pragma once
/// \file
/// The options of `outbox::file_storage` and what its opening reports (storage/file.hpp).

#include <cstdint>
#include <string>
#include <vector>

namespace outbox {

struct file_options {
  enum class sync_policy : std::uint8_t {
    group,         ///< fdatasync before returning; concurrent callers share one (default)
    every_commit,  ///< one fdatasync per operation
    none,          ///< write() only: survives a process crash, not power loss
  };
  sync_policy sync = sync_policy::group;
  bool salvage = false;                            ///< open past corruption, dropping what it hides
  std::uint64_t segment_bytes = 64ULL << 20;       ///< start a new segment beyond this size
  std::uint64_t preallocate_bytes = 1ULL << 20;    ///< zeros kept ahead of the log's end (0: none; unused under sync none)
  std::uint64_t compact_min_dead_bytes = 4ULL << 20;  ///< never compact for less garbage than this
  double compact_dead_ratio = 1.0;                 ///< compact when dead bytes exceed live bytes times this
};

/// What opening found and did.
struct file_recovery {
  std::uint64_t groups_replayed = 0;
  std::uint64_t torn_bytes_truncated = 0;  ///< bytes of an incomplete last group, cut off
  std::string torn_file;                   ///< where, if any
  std::uint64_t salvaged_skips = 0;        ///< unreadable stretches skipped (salvage only)
  std::vector<std::string> notes;          ///< human-readable account of the above
};

}  // namespace outbox
