#pragma once
/// \file
/// `outbox::detail::seq_set`: an ordered set of seqs as bits, for the memory state's indexes
/// by status and its ready heads in seq order.
///
/// Every event moves through three or four of these sets on its way to completed (pending,
/// processing, completed; ready while it heads its line). A `std::set` makes each move an
/// allocation, a free, and a walk down a tree of cold nodes with a rebalance. Seqs are dense
/// integers handed out in order, so here a set is a sorted run of blocks of 1024 bits: a move is
/// a bit flipped in a block found in a small tree (one entry per 1024 seqs), most often the very
/// block the last operation touched. The lowest seq and the seqs after a given one (the queries
/// by status) are found by scanning words, never by visiting absent seqs one by one.

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "outbox/detail/block_run.hpp"

namespace outbox::detail {

/// A block of a seq_set: 1024 seqs as bits.
struct seq_bits {
  std::array<std::uint64_t, 1024 / 64> words{};
  std::size_t count = 0;
};

class seq_set : private block_run<seq_bits, 10> {
  using run = block_run<seq_bits, 10>;
  static constexpr std::size_t words_per_block = std::tuple_size_v<decltype(seq_bits::words)>;
  static_assert(run::block_size == words_per_block * 64);

 public:
  /// Visits the seqs in ascending order.
  class const_iterator : public block_cursor<const_iterator, typename blocks::const_iterator> {
    using cursor = block_cursor<const_iterator, typename blocks::const_iterator>;

   public:
    using value_type = std::uint64_t;
    using pointer = const std::uint64_t*;
    using reference = std::uint64_t;

    const_iterator() = default;
    reference operator*() const noexcept { return this->at_; }  // the seq itself
    const_iterator& operator++() noexcept {
      settle(this->at_ + 1);
      return *this;
    }

   private:
    friend class seq_set;
    const_iterator(typename blocks::const_iterator at, typename blocks::const_iterator end, std::uint64_t from) noexcept
        : cursor(at, end, 0) {
      settle(from);
    }
    /// Moves to the first seq >= `from` in this block or a later one.
    void settle(std::uint64_t from) noexcept {
      while (this->block_ != this->end_) {
        const std::uint64_t base = this->block_->first * block_size;
        std::size_t bit = from > base ? static_cast<std::size_t>(from - base) : 0;
        for (std::size_t w = bit / 64; w < words_per_block; ++w, bit = w * 64) {
          const std::uint64_t word = this->block_->second.words[w] >> (bit % 64) << (bit % 64);
          if (word != 0) {
            this->at_ = base + w * 64 + static_cast<std::size_t>(std::countr_zero(word));
            return;
          }
        }
        ++this->block_;
      }
    }
  };
  using iterator = const_iterator;

  using run::clear;
  using run::empty;
  using run::size;

  /// Adds `seq`; false if it was there already.
  bool insert(std::uint64_t seq) {
    std::uint64_t& word = block_for(seq).words[word_of(seq)];
    const std::uint64_t mask = bit_of(seq);
    if ((word & mask) != 0) return false;
    word |= mask;
    added();
    return true;
  }

  /// Removes `seq`; how many were removed (0 or 1).
  std::size_t erase(std::uint64_t seq) noexcept {
    seq_bits* b = find_block(seq);
    if (b == nullptr) return 0;
    std::uint64_t& word = b->words[word_of(seq)];
    const std::uint64_t mask = bit_of(seq);
    if ((word & mask) == 0) return 0;
    word &= ~mask;
    removed();
    return 1;
  }

  [[nodiscard]] bool contains(std::uint64_t seq) const noexcept {
    const seq_bits* b = find_block(seq);
    return b != nullptr && (b->words[word_of(seq)] & bit_of(seq)) != 0;
  }

  [[nodiscard]] const_iterator begin() const noexcept { return {blocks_.begin(), blocks_.end(), 0}; }
  [[nodiscard]] const_iterator end() const noexcept { return {blocks_.end(), blocks_.end(), 0}; }
  /// The first seq above `seq`.
  [[nodiscard]] const_iterator upper_bound(std::uint64_t seq) const noexcept {
    if (seq == UINT64_MAX) return end();
    return {blocks_.lower_bound(key_of(seq)), blocks_.end(), seq + 1};
  }

 private:
  static constexpr std::size_t word_of(std::uint64_t seq) noexcept { return offset_of(seq) / 64; }
  static constexpr std::uint64_t bit_of(std::uint64_t seq) noexcept { return std::uint64_t{1} << (seq % 64); }
};

/// Seqs by a time (a lease's end, a completion), earliest time first. A claim gives all its
/// events one lease end and a record one completion time, so a time holds a `seq_set`, and
/// adding or removing a seq flips a bit under a time found in a map of a few entries (most
/// often the latest) instead of a node per event.
template <class Time>
class seqs_by_time {
 public:
  [[nodiscard]] bool empty() const noexcept { return times_.empty(); }

  void insert(Time t, std::uint64_t seq) {
    auto at = times_.end();
    if (times_.empty() || std::prev(at)->first != t) at = times_.try_emplace(t).first;
    else --at;
    at->second.insert(seq);
  }

  void erase(Time t, std::uint64_t seq) noexcept {
    const auto at = times_.find(t);
    if (at == times_.end()) return;
    at->second.erase(seq);
    if (at->second.empty()) times_.erase(at);
  }

  /// The earliest time and its lowest seq; not empty.
  [[nodiscard]] std::pair<Time, std::uint64_t> front() const noexcept {
    return {times_.begin()->first, *times_.begin()->second.begin()};
  }

  /// The seqs whose time is after `t`, in time order.
  [[nodiscard]] std::vector<std::uint64_t> after(Time t) const {
    std::vector<std::uint64_t> seqs;
    for (auto at = times_.upper_bound(t); at != times_.end(); ++at) seqs.insert(seqs.end(), at->second.begin(), at->second.end());
    return seqs;
  }

 private:
  std::map<Time, seq_set> times_;
};

}  // namespace outbox::detail
