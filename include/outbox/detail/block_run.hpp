#pragma once
/// \file
/// `outbox::detail::block_run`: seqs kept in a sorted run of fixed-size blocks, each covering a
/// range of consecutive seqs, found in a small tree whose last-used block is remembered; a block
/// goes when its last element does. The bitsets of detail/seq_set.hpp and the event slots of
/// detail/event_store.hpp are such runs. `block_cursor` is what their forward iterators share:
/// a block, the end of the run, a position within or past the block, post-increment by
/// pre-increment, and equality that treats every position at the end alike.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <utility>

namespace outbox::detail {

/// `Derived` provides `operator++()` and its dereference; `BlockIterator` walks the blocks.
template <class Derived, class BlockIterator>
class block_cursor {
 public:
  using iterator_category = std::forward_iterator_tag;
  using difference_type = std::ptrdiff_t;

  Derived operator++(int) noexcept {
    Derived before = static_cast<Derived&>(*this);
    ++static_cast<Derived&>(*this);
    return before;
  }
  friend bool operator==(const Derived& a, const Derived& b) noexcept {
    return a.block_ == b.block_ && (a.block_ == a.end_ || a.at_ == b.at_);
  }

 protected:
  block_cursor() = default;
  block_cursor(BlockIterator block, BlockIterator end, std::uint64_t at) noexcept : block_(block), end_(end), at_(at) {}

  BlockIterator block_{};
  BlockIterator end_{};
  std::uint64_t at_ = 0;  // what within the block the iterator stands at
};

/// The run of `Block`s (each with a `count` of its elements), 2^Shift seqs per block, and how
/// many elements all of them hold. The derived container says what an element is.
template <class Block, unsigned Shift>
class block_run {
 public:
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  void clear() noexcept {
    blocks_.clear();
    size_ = 0;
    last_ = blocks_.end();
  }

 protected:
  using blocks = std::map<std::uint64_t, Block>;
  static constexpr std::uint64_t block_size = std::uint64_t{1} << Shift;

  block_run() = default;
  block_run(const block_run& other) : blocks_(other.blocks_), size_(other.size_) {}
  block_run& operator=(const block_run& other) {
    if (this != &other) {
      blocks_ = other.blocks_;
      size_ = other.size_;
      last_ = blocks_.end();
    }
    return *this;
  }
  // A moved-from run is empty, with a remembered block of its own.
  block_run(block_run&& other) noexcept : blocks_(std::move(other.blocks_)), size_(other.size_) { other.clear(); }
  block_run& operator=(block_run&& other) noexcept {
    if (this != &other) {
      blocks_ = std::move(other.blocks_);
      size_ = other.size_;
      last_ = blocks_.end();
      other.clear();
    }
    return *this;
  }
  ~block_run() = default;

  static constexpr std::uint64_t key_of(std::uint64_t seq) noexcept { return seq >> Shift; }
  static constexpr std::size_t offset_of(std::uint64_t seq) noexcept { return static_cast<std::size_t>(seq % block_size); }

  /// The block covering `seq`, made if there is none; it becomes the remembered one.
  Block& block_for(std::uint64_t seq) {
    const std::uint64_t key = key_of(seq);
    if (last_ == blocks_.end() || last_->first != key) last_ = blocks_.try_emplace(key).first;
    return last_->second;
  }
  /// The block covering `seq`, or nullptr; a block found becomes the remembered one.
  Block* find_block(std::uint64_t seq) noexcept {
    const std::uint64_t key = key_of(seq);
    if (last_ == blocks_.end() || last_->first != key) {
      const auto found = blocks_.find(key);
      if (found == blocks_.end()) return nullptr;
      last_ = found;
    }
    return &last_->second;
  }
  [[nodiscard]] const Block* find_block(std::uint64_t seq) const noexcept {
    const auto found = blocks_.find(key_of(seq));
    return found == blocks_.end() ? nullptr : &found->second;
  }
  /// One element more in the remembered block.
  void added() noexcept {
    ++last_->second.count;
    ++size_;
  }
  /// One element fewer in the remembered block, which goes if it has none left.
  void removed() noexcept {
    --size_;
    if (--last_->second.count == 0) {
      blocks_.erase(last_);
      last_ = blocks_.end();
    }
  }

  blocks blocks_;

 private:
  std::size_t size_ = 0;
  typename blocks::iterator last_ = blocks_.end();  // the block of the last change or look-up
};

}  // namespace outbox::detail
