#pragma once
/// \file
/// `outbox::detail::field_index`: the seqs of the events holding each value of one text field
/// (an entity id, a type), for the memory state's queries by that field.
///
/// Events join at the back of their value's deque (a new event has the highest seq yet) and
/// mostly leave from its front (purges take the oldest completed events), both O(1); a page
/// starts with a binary search for `after_seq`. A value keeps its deque only while it has events.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>

#include "outbox/detail/seq_deque.hpp"

namespace outbox::detail {

/// Hashes std::string keys and finds them by std::string_view, without a copy.
struct transparent_string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// For each value of a field, the seqs of the events that hold it.
class field_index {
 public:
  void add(std::string_view value, std::uint64_t seq) {
    auto found = seqs_.find(value);
    if (found == seqs_.end()) found = seqs_.emplace(std::string(value), seq_deque{}).first;
    found->second.insert(seq);
  }

  void remove(std::string_view value, std::uint64_t seq) {
    const auto found = seqs_.find(value);
    if (found == seqs_.end()) return;
    found->second.erase(seq);
    if (found->second.empty()) seqs_.erase(found);
  }

  /// Calls `visit(seq)` for the seqs of `value` above `after_seq`, in order, until it returns false.
  template <class Visit>
  void each_after(std::string_view value, std::uint64_t after_seq, Visit&& visit) const {
    const auto found = seqs_.find(value);
    if (found == seqs_.end() || after_seq == std::numeric_limits<std::uint64_t>::max()) return;
    const seq_deque& seqs = found->second;
    for (std::size_t i = seqs.lower_bound(after_seq + 1); i < seqs.size(); ++i)
      if (!visit(seqs[i])) return;
  }

 private:
  std::unordered_map<std::string, seq_deque, transparent_string_hash, std::equal_to<>> seqs_;
};

}  // namespace outbox::detail
