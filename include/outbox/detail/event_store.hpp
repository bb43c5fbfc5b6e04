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
#include <utility>

#include "outbox/detail/block_cursor.hpp"
#include "outbox/event.hpp"

namespace outbox::detail {

class event_store {
  static constexpr unsigned block_shift = 8;  // 256 seqs per block
  static constexpr std::size_t block_size = std::size_t{1} << block_shift;
  struct block {
    std::array<std::unique_ptr<event>, block_size> slots{};
    std::size_t count = 0;
  };
  using blocks = std::map<std::uint64_t, block>;

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
  event_store(event_store&& other) noexcept : blocks_(std::move(other.blocks_)), size_(other.size_) { other.clear(); }
  event_store& operator=(event_store&& other) noexcept {
    if (this != &other) {
      blocks_ = std::move(other.blocks_);
      size_ = other.size_;
      last_ = blocks_.end();
      other.clear();
    }
    return *this;
  }
  ~event_store() = default;

  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// The event with this seq, or nullptr.
  [[nodiscard]] event* find(std::uint64_t seq) noexcept {
    block* b = block_of(seq);
    return b == nullptr ? nullptr : b->slots[slot_of(seq)].get();
  }
  [[nodiscard]] const event* find(std::uint64_t seq) const noexcept {
    const auto found = blocks_.find(seq >> block_shift);
    return found == blocks_.end() ? nullptr : found->second.slots[slot_of(seq)].get();
  }
  [[nodiscard]] bool contains(std::uint64_t seq) const noexcept { return find(seq) != nullptr; }
  /// The event with this seq, which must be stored.
  [[nodiscard]] event& at(std::uint64_t seq) noexcept { return *find(seq); }
  [[nodiscard]] const event& at(std::uint64_t seq) const noexcept { return *find(seq); }

  /// Stores `e` under its seq, replacing the event stored there; returns it as stored, which
  /// keeps its address if it replaced one.
  event& put(event&& e) {
    const std::uint64_t key = e.seq >> block_shift;
    if (last_ == blocks_.end() || last_->first != key) last_ = blocks_.try_emplace(key).first;
    std::unique_ptr<event>& slot = last_->second.slots[slot_of(e.seq)];
    if (slot) {
      *slot = std::move(e);
    } else {
      slot = std::make_unique<event>(std::move(e));
      ++last_->second.count;
      ++size_;
    }
    return *slot;
  }

  /// Erases the event with this seq, if stored.
  void erase(std::uint64_t seq) noexcept {
    block* b = block_of(seq);
    if (b == nullptr) return;
    std::unique_ptr<event>& slot = b->slots[slot_of(seq)];
    if (!slot) return;
    slot.reset();
    --size_;
    if (--b->count == 0) {
      blocks_.erase(last_);
      last_ = blocks_.end();
    }
  }

  [[nodiscard]] const_iterator begin() const noexcept { return {blocks_.begin(), blocks_.end(), 0}; }
  [[nodiscard]] const_iterator end() const noexcept { return {blocks_.end(), blocks_.end(), 0}; }
  /// The first event whose seq is above `seq`.
  [[nodiscard]] const_iterator upper_bound(std::uint64_t seq) const noexcept {
    if (seq == UINT64_MAX) return end();
    const std::uint64_t from = seq + 1;
    const auto at = blocks_.lower_bound(from >> block_shift);
    const std::size_t slot = at != blocks_.end() && at->first == (from >> block_shift) ? slot_of(from) : 0;
    return {at, blocks_.end(), slot};
  }

  void clear() noexcept {
    blocks_.clear();
    size_ = 0;
    last_ = blocks_.end();
  }

 private:
  static constexpr std::size_t slot_of(std::uint64_t seq) noexcept { return static_cast<std::size_t>(seq % block_size); }

  /// The block that would hold `seq`, made the last-used one; nullptr if there is none.
  block* block_of(std::uint64_t seq) noexcept {
    const std::uint64_t key = seq >> block_shift;
    if (last_ == blocks_.end() || last_->first != key) {
      const auto found = blocks_.find(key);
      if (found == blocks_.end()) return nullptr;
      last_ = found;
    }
    return &last_->second;
  }

  blocks blocks_;
  std::size_t size_ = 0;
  typename blocks::iterator last_ = blocks_.end();  // the block of the last put, find or erase
};

}  // namespace outbox::detail
