#pragma once
/// \file
/// `outbox::detail::event_store`: the events of a memory state, found by seq.
///
/// Seqs are dense integers handed out in order, so the store is a sorted run of blocks of 256
/// slots, each slot owning its event or empty, found in a small tree (one entry per 256 seqs)
/// whose last-used block is remembered: appending, and finding the events a claim or a record
/// is working on, mostly land in the block the previous call used. An event stays at one
/// address until it is erased, so other indexes may point at it. A block goes when its last
/// event does: a few old events kept back (dead ones awaiting a reset, say) pin one block of
/// pointers each, not the events that were purged around them.

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "outbox/detail/block_run.hpp"
#include "outbox/event.hpp"

namespace outbox::detail {

/// A block of the store: 256 slots, each owning its event or empty.
struct event_slots {
  std::array<std::unique_ptr<event>, 256> slots{};
  std::size_t count = 0;
};

class event_store : private block_run<event_slots, 8> {
  using run = block_run<event_slots, 8>;
  static_assert(run::block_size == std::tuple_size_v<decltype(event_slots::slots)>);

 public:
  /// Visits the events in seq order.
  class const_iterator : public block_cursor<const_iterator, typename blocks::const_iterator> {
    using cursor = block_cursor<const_iterator, typename blocks::const_iterator>;

   public:
    using value_type = event;
    using pointer = const event*;
    using reference = const event&;

    const_iterator() = default;
    reference operator*() const noexcept { return *slot(); }
    pointer operator->() const noexcept { return slot().get(); }
    const_iterator& operator++() noexcept {
      ++this->at_;
      settle();
      return *this;
    }

   private:
    friend class event_store;
    const_iterator(typename blocks::const_iterator at, typename blocks::const_iterator end, std::size_t slot) noexcept
        : cursor(at, end, slot) {
      settle();
    }
    [[nodiscard]] const std::unique_ptr<event>& slot() const noexcept {
      return this->block_->second.slots[static_cast<std::size_t>(this->at_)];
    }
    /// Moves to the first occupied slot at or after this one.
    void settle() noexcept {
      while (this->block_ != this->end_) {
        for (; this->at_ < block_size; ++this->at_)
          if (slot()) return;
        ++this->block_;
        this->at_ = 0;
      }
    }
  };
  using iterator = const_iterator;

  event_store() = default;
  event_store(const event_store&) = delete;  // the owner's other indexes point into it
  event_store& operator=(const event_store&) = delete;
  event_store(event_store&&) noexcept = default;
  event_store& operator=(event_store&&) noexcept = default;
  ~event_store() = default;

  using run::clear;
  using run::empty;
  using run::size;

  /// The event with this seq, or nullptr.
  [[nodiscard]] event* find(std::uint64_t seq) noexcept {
    event_slots* b = find_block(seq);
    return b == nullptr ? nullptr : b->slots[offset_of(seq)].get();
  }
  [[nodiscard]] const event* find(std::uint64_t seq) const noexcept {
    const event_slots* b = find_block(seq);
    return b == nullptr ? nullptr : b->slots[offset_of(seq)].get();
  }
  [[nodiscard]] bool contains(std::uint64_t seq) const noexcept { return find(seq) != nullptr; }
  /// The event with this seq, which must be stored.
  [[nodiscard]] event& at(std::uint64_t seq) noexcept { return *find(seq); }
  [[nodiscard]] const event& at(std::uint64_t seq) const noexcept { return *find(seq); }

  /// Stores `e` under its seq, replacing the event stored there; returns it as stored, which
  /// keeps its address if it replaced one.
  event& put(event&& e) {
    std::unique_ptr<event>& slot = block_for(e.seq).slots[offset_of(e.seq)];
    if (slot) {
      *slot = std::move(e);
    } else {
      slot = std::make_unique<event>(std::move(e));
      added();
    }
    return *slot;
  }

  /// Erases the event with this seq, if stored.
  void erase(std::uint64_t seq) noexcept {
    event_slots* b = find_block(seq);
    if (b == nullptr || !b->slots[offset_of(seq)]) return;
    b->slots[offset_of(seq)].reset();
    removed();
  }

  [[nodiscard]] const_iterator begin() const noexcept { return {blocks_.begin(), blocks_.end(), 0}; }
  [[nodiscard]] const_iterator end() const noexcept { return {blocks_.end(), blocks_.end(), 0}; }
  /// The first event whose seq is above `seq`.
  [[nodiscard]] const_iterator upper_bound(std::uint64_t seq) const noexcept {
    if (seq == UINT64_MAX) return end();
    const std::uint64_t from = seq + 1;
    const auto at = blocks_.lower_bound(key_of(from));
    const std::size_t slot = at != blocks_.end() && at->first == key_of(from) ? offset_of(from) : 0;
    return {at, blocks_.end(), slot};
  }
};

}  // namespace outbox::detail
