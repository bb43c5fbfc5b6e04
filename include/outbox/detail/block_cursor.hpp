#pragma once
/// \file
/// `outbox::detail::block_cursor`: what the forward iterators over a sorted run of blocks (the
/// bitsets of detail/seq_set.hpp, the event slots of detail/event_store.hpp) share: a block, the
/// end of the run, a position within or past the block, post-increment by pre-increment, and
/// equality that treats every position at the end alike.

#include <cstddef>
#include <cstdint>
#include <iterator>

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

}  // namespace outbox::detail
