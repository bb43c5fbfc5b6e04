#pragma once
/// \file
/// `outbox::detail::seq_sizes`: a size per seq, for the file storage's space accounting (how
/// many bytes the latest record of each live event takes in the log).
///
/// Every logged event sets its size, so this sits on the append path. Seqs are handed out in
/// order and live ones cluster at the recent end, so an array indexed by seq fits them: pages
/// of `page_seqs` sizes, each allocated when its first size is set and freed when its last one
/// goes, found by page number in a hash map with the last page used cached in front of it.
/// Consecutive seqs cost an index into the cached page, where a hash map of seqs allocated a
/// node per event. A page pinned by one old live event (a dead event never reset, say) costs
/// 1 KiB; any seq is accepted, however far from the others (a log read back may say anything).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>

namespace outbox::detail {

class seq_sizes {
 public:
  static constexpr unsigned page_bits = 8;
  static constexpr std::size_t page_seqs = std::size_t{1} << page_bits;

  /// Sets the size of `seq` (a record is never 0 bytes); returns its previous size, 0 if none.
  std::uint32_t set(std::uint64_t seq, std::uint32_t bytes) {
    page& p = page_for(seq >> page_bits);
    std::uint32_t& slot = p.sizes[seq & (page_seqs - 1)];
    const std::uint32_t before = slot;
    if (before == 0) ++p.used;
    slot = bytes;
    return before;
  }

  /// Forgets `seq`; returns the size it had, 0 if none.
  std::uint32_t erase(std::uint64_t seq) {
    const std::uint64_t number = seq >> page_bits;
    page* p = find(number);
    if (p == nullptr) return 0;
    std::uint32_t& slot = p->sizes[seq & (page_seqs - 1)];
    const std::uint32_t before = slot;
    if (before == 0) return 0;
    slot = 0;
    if (--p->used == 0) {
      if (cached_ == p) cached_ = nullptr;
      pages_.erase(number);
    }
    return before;
  }

  /// The size of `seq`, 0 if none.
  [[nodiscard]] std::uint32_t get(std::uint64_t seq) const noexcept {
    const auto found = pages_.find(seq >> page_bits);
    return found == pages_.end() ? 0 : found->second->sizes[seq & (page_seqs - 1)];
  }

  /// Seqs with a size.
  [[nodiscard]] std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const auto& entry : pages_) n += entry.second->used;
    return n;
  }
  /// Pages allocated now: what this costs in memory, page_seqs * 4 bytes each.
  [[nodiscard]] std::size_t pages() const noexcept { return pages_.size(); }

  void clear() noexcept {
    pages_.clear();
    cached_ = nullptr;
  }

 private:
  struct page {
    std::uint32_t sizes[page_seqs] = {};
    std::size_t used = 0;
  };

  page* find(std::uint64_t number) {
    if (cached_ != nullptr && cached_number_ == number) return cached_;
    const auto found = pages_.find(number);
    if (found == pages_.end()) return nullptr;
    cached_number_ = number;
    return cached_ = found->second.get();
  }

  page& page_for(std::uint64_t number) {
    if (page* p = find(number)) return *p;
    auto fresh = std::make_unique<page>();
    page* raw = fresh.get();
    pages_.emplace(number, std::move(fresh));  // if this throws, nothing was added
    cached_number_ = number;
    return *(cached_ = raw);
  }

  std::unordered_map<std::uint64_t, std::unique_ptr<page>> pages_;
  page* cached_ = nullptr;  // the page last found, and its number
  std::uint64_t cached_number_ = 0;
};

}  // namespace outbox::detail
