#pragma once
/// \file
/// `outbox::detail::seq_deque`: a sorted set of seqs in one ring buffer, for the members of an
/// ordering key's line in the memory state, and for the events of one entity or one type in its
/// query indexes (detail/field_index.hpp).
///
/// A line gains members at its end (new events have the highest seq yet) and loses them at its
/// front (the head is what gets delivered), and it is touched once per thousand events when a
/// thousand keys take turns. A `std::set` node per member makes each of those visits a walk of
/// cold tree nodes (the hint check, then the rebalance); here both ends are O(1) and touch one
/// cache line. An insert or erase in the middle (a dead event reset back into its line, a
/// pending event dropped by coalescing) shifts the shorter side: O(min(i, n - i)).

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace outbox::detail {

class seq_deque {
 public:
  seq_deque() = default;
  seq_deque(const seq_deque&) = default;
  seq_deque& operator=(const seq_deque&) = default;
  // A moved-from deque is empty, not a count without slots.
  seq_deque(seq_deque&& other) noexcept
      : slots_(std::move(other.slots_)), head_(std::exchange(other.head_, 0)), size_(std::exchange(other.size_, 0)) {
    other.slots_.clear();
  }
  seq_deque& operator=(seq_deque&& other) noexcept {
    if (this == &other) return *this;
    slots_ = std::move(other.slots_);
    other.slots_.clear();
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }
  ~seq_deque() = default;

  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// The lowest seq; the deque must not be empty.
  [[nodiscard]] std::uint64_t front() const noexcept { return at(0); }
  /// The highest seq; the deque must not be empty.
  [[nodiscard]] std::uint64_t back() const noexcept { return at(size_ - 1); }
  /// The i-th lowest seq, i < size().
  [[nodiscard]] std::uint64_t operator[](std::size_t i) const noexcept { return at(i); }

  /// The index of the first seq not below `seq` (size() if none is).
  [[nodiscard]] std::size_t lower_bound(std::uint64_t seq) const noexcept {
    std::size_t low = 0;
    std::size_t count = size_;
    while (count > 0) {
      const std::size_t half = count / 2;
      if (at(low + half) < seq) {
        low += half + 1;
        count -= half + 1;
      } else {
        count = half;
      }
    }
    return low;
  }

  [[nodiscard]] bool contains(std::uint64_t seq) const noexcept {
    const std::size_t i = lower_bound(seq);
    return i < size_ && at(i) == seq;
  }

  /// Adds `seq` in order; does nothing if it is there already. O(1) at either end.
  void insert(std::uint64_t seq) {
    const std::size_t i = (size_ == 0 || seq > back()) ? size_ : lower_bound(seq);
    if (i < size_ && at(i) == seq) return;
    if (size_ == slots_.size()) grow();
    if (i < size_ / 2) {  // open the gap on the front side: move [0, i) one slot down
      head_ = (head_ + mask()) & mask();
      for (std::size_t k = 0; k < i; ++k) at(k) = at(k + 1);
    } else {  // on the back side: move [i, size) one slot up
      for (std::size_t k = size_; k > i; --k) at(k) = at(k - 1);
    }
    at(i) = seq;
    ++size_;
  }

  /// Removes `seq`; does nothing if it is not there. O(1) at either end.
  void erase(std::uint64_t seq) noexcept {
    if (size_ == 0) return;
    const std::size_t i = seq == front() ? 0 : lower_bound(seq);
    if (i == size_ || at(i) != seq) return;
    if (i < size_ / 2) {  // close the gap from the front side
      for (std::size_t k = i; k > 0; --k) at(k) = at(k - 1);
      head_ = (head_ + 1) & mask();
    } else {
      for (std::size_t k = i; k + 1 < size_; ++k) at(k) = at(k + 1);
    }
    --size_;
  }

 private:
  [[nodiscard]] std::size_t mask() const noexcept { return slots_.size() - 1; }
  [[nodiscard]] std::uint64_t at(std::size_t i) const noexcept { return slots_[(head_ + i) & mask()]; }
  [[nodiscard]] std::uint64_t& at(std::size_t i) noexcept { return slots_[(head_ + i) & mask()]; }

  void grow() {
    std::vector<std::uint64_t> bigger(slots_.empty() ? 4 : 2 * slots_.size());
    for (std::size_t k = 0; k < size_; ++k) bigger[k] = at(k);
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<std::uint64_t> slots_;  // a power of two in size, or empty
  std::size_t head_ = 0;              // the slot of the lowest seq
  std::size_t size_ = 0;
};

}  // namespace outbox::detail
