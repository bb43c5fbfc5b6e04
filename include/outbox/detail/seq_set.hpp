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
#include <utility>
#include <vector>

#include "outbox/detail/block_cursor.hpp"

namespace outbox::detail {

class seq_set {
  static constexpr unsigned block_shift = 10;  // 1024 seqs per block
  static constexpr std::size_t words_per_block = (std::size_t{1} << block_shift) / 64;
  struct block {
    std::array<std::uint64_t, words_per_block> words{};
    std::size_t count = 0;
  };
  using blocks = std::map<std::uint64_t, block>;

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
        const std::uint64_t base = this->block_->first << block_shift;
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

  seq_set() = default;
  seq_set(const seq_set& other) : blocks_(other.blocks_), size_(other.size_) {}
  seq_set& operator=(const seq_set& other) {
    if (this != &other) {
      blocks_ = other.blocks_;
      size_ = other.size_;
      last_ = blocks_.end();
    }
    return *this;
  }
  seq_set(seq_set&& other) noexcept : blocks_(std::move(other.blocks_)), size_(other.size_) { other.clear(); }
  seq_set& operator=(seq_set&& other) noexcept {
    if (this != &other) {
      blocks_ = std::move(other.blocks_);
      size_ = other.size_;
      last_ = blocks_.end();
      other.clear();
    }
    return *this;
  }
  ~seq_set() = default;

  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// Adds `seq`; false if it was there already.
  bool insert(std::uint64_t seq) {
    const std::uint64_t key = seq >> block_shift;
    if (last_ == blocks_.end() || last_->first != key) last_ = blocks_.try_emplace(key).first;
    std::uint64_t& word = last_->second.words[word_of(seq)];
    const std::uint64_t mask = bit_of(seq);
    if ((word & mask) != 0) return false;
    word |= mask;
    ++last_->second.count;
    ++size_;
    return true;
  }

  /// Removes `seq`; how many were removed (0 or 1).
  std::size_t erase(std::uint64_t seq) noexcept {
    const std::uint64_t key = seq >> block_shift;
    if (last_ == blocks_.end() || last_->first != key) {
      const auto found = blocks_.find(key);
      if (found == blocks_.end()) return 0;
      last_ = found;
    }
    std::uint64_t& word = last_->second.words[word_of(seq)];
    const std::uint64_t mask = bit_of(seq);
    if ((word & mask) == 0) return 0;
    word &= ~mask;
    --size_;
    if (--last_->second.count == 0) {
      blocks_.erase(last_);
      last_ = blocks_.end();
    }
    return 1;
  }

  [[nodiscard]] bool contains(std::uint64_t seq) const noexcept {
    const auto found = blocks_.find(seq >> block_shift);
    return found != blocks_.end() && (found->second.words[word_of(seq)] & bit_of(seq)) != 0;
  }

  [[nodiscard]] const_iterator begin() const noexcept { return {blocks_.begin(), blocks_.end(), 0}; }
  [[nodiscard]] const_iterator end() const noexcept { return {blocks_.end(), blocks_.end(), 0}; }
  /// The first seq above `seq`.
  [[nodiscard]] const_iterator upper_bound(std::uint64_t seq) const noexcept {
    if (seq == UINT64_MAX) return end();
    return {blocks_.lower_bound(seq >> block_shift), blocks_.end(), seq + 1};
  }

  void clear() noexcept {
    blocks_.clear();
    size_ = 0;
    last_ = blocks_.end();
  }

 private:
  static constexpr std::size_t word_of(std::uint64_t seq) noexcept {
    return static_cast<std::size_t>(seq % (std::uint64_t{1} << block_shift)) / 64;
  }
  static constexpr std::uint64_t bit_of(std::uint64_t seq) noexcept { return std::uint64_t{1} << (seq % 64); }

  blocks blocks_;
  std::size_t size_ = 0;
  typename blocks::iterator last_ = blocks_.end();  // the block of the last insert or erase
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
