#pragma once
/// \file
/// `outbox::detail::id_index`: the memory state's map from event id to seq, as one flat array.
///
/// A node-based `std::unordered_map` costs an allocation per event and two dependent cache
/// misses per lookup (the bucket, then the node); with a hundred thousand events neither is in
/// cache, and an append looks every id up twice (the duplicate check, then the insert). Here a
/// lookup is one probe sequence in one array: open addressing, linear probing, a power-of-two
/// capacity kept at most half full, and backward-shift deletion, so there are no tombstones and
/// a table that sees many erasures probes as short as a fresh one.
///
/// The nil id marks an empty slot, so it can never be a key: the memory state stores only
/// validated events, whose ids are never nil. Looking nil up finds nothing.

#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "outbox/event_id.hpp"

namespace outbox::detail {

class id_index {
 public:
  id_index() = default;
  id_index(const id_index&) = default;
  id_index& operator=(const id_index&) = default;
  // A moved-from index is empty, not a table with a count but no slots.
  id_index(id_index&& other) noexcept
      : slots_(std::move(other.slots_)), size_(std::exchange(other.size_, 0)), shift_(std::exchange(other.shift_, 64)) {
    other.slots_.clear();
  }
  id_index& operator=(id_index&& other) noexcept {
    if (this == &other) return *this;
    slots_ = std::move(other.slots_);
    other.slots_.clear();
    size_ = std::exchange(other.size_, 0);
    shift_ = std::exchange(other.shift_, 64);
    return *this;
  }
  ~id_index() = default;

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// Slots in the table: a power of two (or zero before the first insert), at least twice size().
  [[nodiscard]] std::size_t capacity() const noexcept { return slots_.size(); }

  [[nodiscard]] std::optional<std::uint64_t> find(const event_id& id) const noexcept {
    const std::size_t i = locate(id);
    if (i == absent) return std::nullopt;
    return slots_[i].seq;
  }
  [[nodiscard]] bool contains(const event_id& id) const noexcept { return locate(id) != absent; }

  /// The slot `id` sits in, or nullopt: for tests that pin down probing and wrap-around.
  [[nodiscard]] std::optional<std::size_t> slot_of(const event_id& id) const noexcept {
    const std::size_t i = locate(id);
    if (i == absent) return std::nullopt;
    return i;
  }

  /// Maps `id` to `seq`, replacing what it mapped to before. `id` must not be nil.
  void insert_or_assign(const event_id& id, std::uint64_t seq) {
    assert(!id.is_nil() && "outbox::detail::id_index: the nil id marks empty slots and cannot be a key");
    if (2 * (size_ + 1) > slots_.size()) grow();
    std::size_t i = home(id);
    for (; !slots_[i].id.is_nil(); i = next(i)) {
      if (slots_[i].id == id) {
        slots_[i].seq = seq;
        return;
      }
    }
    slots_[i] = {id, seq};
    ++size_;
  }

  /// Removes `id`; false if it was not there.
  bool erase(const event_id& id) noexcept {
    std::size_t hole = locate(id);
    if (hole == absent) return false;
    // Backward shift: walk the run after the hole and move back every entry whose home does
    // not lie cyclically in (hole, j], so that no entry is ever separated from its home by an
    // empty slot. The run ends at the first empty slot.
    for (std::size_t j = next(hole); !slots_[j].id.is_nil(); j = next(j)) {
      const std::size_t h = home(slots_[j].id);
      const bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole] = slot{};
    --size_;
    return true;
  }

 private:
  struct slot {
    event_id id{};  // nil: empty
    std::uint64_t seq = 0;
  };

  static constexpr std::size_t absent = static_cast<std::size_t>(-1);

  [[nodiscard]] std::size_t locate(const event_id& id) const noexcept {
    if (id.is_nil() || slots_.empty()) return absent;
    for (std::size_t i = home(id);; i = next(i)) {
      if (slots_[i].id == id) return i;
      if (slots_[i].id.is_nil()) return absent;
    }
  }

  /// Fibonacci hashing on top of std::hash: the top bits of the product depend on every bit of
  /// the hash, so ids that differ only in their high word (a test's hand-made ids) still spread.
  [[nodiscard]] std::size_t home(const event_id& id) const noexcept {
    const std::uint64_t mixed = static_cast<std::uint64_t>(std::hash<event_id>{}(id)) * 0x9E3779B97F4A7C15ULL;
    return static_cast<std::size_t>(mixed >> shift_);
  }
  [[nodiscard]] std::size_t next(std::size_t i) const noexcept { return (i + 1) & (slots_.size() - 1); }

  void grow() {
    const std::size_t capacity = slots_.empty() ? 16 : 2 * slots_.size();
    std::vector<slot> old(capacity);
    old.swap(slots_);
    shift_ = 64 - std::countr_zero(capacity);
    for (const slot& s : old) {
      if (s.id.is_nil()) continue;
      std::size_t i = home(s.id);
      while (!slots_[i].id.is_nil()) i = next(i);
      slots_[i] = s;
    }
  }

  std::vector<slot> slots_;
  std::size_t size_ = 0;
  int shift_ = 64;  // 64 - log2(capacity): home() keeps the top log2(capacity) bits
};

}  // namespace outbox::detail
