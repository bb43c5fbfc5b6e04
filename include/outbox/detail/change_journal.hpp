#pragma once
/// \file
/// What one operation changed in a `memory_state`, for a storage that persists that state (the
/// file storage logs exactly these).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace outbox::detail {

/// What one operation changed, for storages that persist the memory state (the file storage
/// logs exactly these). Entries may repeat; the last state in memory is what counts.
struct change_journal {
  std::vector<std::uint64_t> events;           ///< seqs written or rewritten
  std::vector<std::uint64_t> removed_events;   ///< seqs deleted
  std::vector<std::pair<std::string, std::string>> entities;          ///< (collection, id) written
  std::vector<std::pair<std::string, std::string>> removed_entities;  ///< (collection, id) deleted
  [[nodiscard]] bool empty() const noexcept {
    return events.empty() && removed_events.empty() && entities.empty() && removed_entities.empty();
  }
  void clear() noexcept {
    events.clear();
    removed_events.clear();
    entities.clear();
    removed_entities.clear();
  }
};

}  // namespace outbox::detail
