#pragma once
/// \file
/// `completed_archive`: the completed events the file storage read back from its log, kept as
/// their records' bytes instead of in the memory index (detail/memory_state.hpp).
///
/// A completed event changes no more: it waits only to be queried (the audit trail) or purged.
/// Rebuilding it into the index at open costs microseconds per event, so a log that retains a
/// million deliveries would open in seconds. Here opening an event costs its checksum, a parse
/// of its record without building strings, and about 100 bytes of index (an entry, id-table
/// slots); a query decodes only the records it returns. The bytes stay those of the segments read (shared, so
/// compaction can copy the records as they are), and after a compaction those of its snapshot.
///
/// Not synchronised: the file storage holds its mutex around every use.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/detail/id_index.hpp"
#include "outbox/detail/log_format.hpp"
#include "outbox/detail/seq_sizes.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox::detail::file {

class completed_archive {
 public:
  using bytes_ptr = std::shared_ptr<const std::string>;

  [[nodiscard]] bool empty() const noexcept { return live_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return live_; }

  void clear() { *this = completed_archive(); }

  /// Adds (or replaces, by seq) a completed event whose record `c` lies in `bytes` (a segment's
  /// contents), which it keeps. The caller has checked that no other event holds its id.
  void put(const log::completed_record& c, const bytes_ptr& bytes) {
    if (chunks_.empty() || chunks_.back() != bytes) chunks_.push_back(bytes);
    remove(c.seq);
    if (!entries_.empty() && entries_.back().seq > c.seq) sorted_ = false;
    entries_.push_back({c.seq, to_micros(c.completed_at), user_number(c.user_id),
                        static_cast<std::uint32_t>(chunks_.size() - 1), c.body, c.body_size, false});
    positions_.set(c.seq, static_cast<std::uint32_t>(entries_.size()));  // position + 1: never 0
    ids_.insert_or_assign(c.id, c.seq);
    ++user_counts_[entries_.back().user];
    ++live_;
  }

  /// Forgets the event `seq`, if it is here.
  bool remove(std::uint64_t seq) {
    const std::uint32_t at = positions_.get(seq);
    if (at == 0) return false;
    entry& e = entries_[at - 1];
    positions_.erase(seq);
    ids_.erase(id_of(e));
    --user_counts_[e.user];
    e.removed = true;
    --live_;
    return true;
  }

  /// The seq of the archived event `id`, if there is one.
  [[nodiscard]] std::optional<std::uint64_t> seq_of(const event_id& id) const noexcept {
    if (live_ == 0) return std::nullopt;
    return ids_.find(id);
  }

  /// After the last put of an open: entries in seq order, for queries.
  void finish_loading() {
    if (sorted_) return;
    std::stable_sort(entries_.begin(), entries_.end(), [](const entry& a, const entry& b) { return a.seq < b.seq; });
    reindex();
  }

  [[nodiscard]] std::optional<event> find(const event_id& id) const {
    const auto seq = seq_of(id);
    if (!seq) return std::nullopt;
    return decode(entries_[positions_.get(*seq) - 1]);
  }

  /// Completed events of `user` (every user if none) after `after_seq`, in seq order, at most
  /// `limit`.
  [[nodiscard]] std::vector<event> query(const std::optional<std::string>& user, std::uint64_t after_seq,
                                         std::size_t limit) const {
    std::vector<event> page;
    if (live_ == 0) return page;
    std::optional<std::uint32_t> only;
    if (user) {
      const auto found = std::find(users_.begin(), users_.end(), *user);
      if (found == users_.end()) return page;
      only = static_cast<std::uint32_t>(found - users_.begin());
    }
    auto it = std::upper_bound(entries_.begin(), entries_.end(), after_seq,
                               [](std::uint64_t seq, const entry& e) { return seq < e.seq; });
    for (; it != entries_.end() && page.size() < limit; ++it)
      if (!it->removed && (!only || it->user == *only)) page.push_back(decode(*it));
    return page;
  }

  /// Archived events of `user` (every user if none).
  [[nodiscard]] std::size_t count(std::optional<std::string_view> user) const {
    if (!user) return live_;
    const auto found = std::find(users_.begin(), users_.end(), *user);
    return found == users_.end() ? 0 : user_counts_[static_cast<std::size_t>(found - users_.begin())];
  }

  /// Removes the events completed before `before`, appending their seqs to `removed`.
  std::size_t purge(timestamp before, std::vector<std::uint64_t>& removed) {
    const std::int64_t limit = to_micros(before);
    std::size_t count = 0;
    for (const entry& e : entries_) {
      if (e.removed || e.completed_at >= limit) continue;
      removed.push_back(e.seq);
      ++count;
    }
    for (std::size_t i = removed.size() - count; i < removed.size(); ++i) remove(removed[i]);
    return count;
  }

  /// Appends every archived record, framed as it was, to `out`; `at` gets where each body
  /// lands, in entry order. For a compaction's snapshot.
  void copy_records(std::string& out, std::vector<std::size_t>& at) const {
    for (const entry& e : entries_) {
      if (e.removed) continue;
      const std::string& bytes = *chunks_[e.chunk];
      at.push_back(out.size() + log::frame_overhead);
      out.append(bytes, e.body - log::frame_overhead, e.body_size + log::frame_overhead);
    }
  }

  /// After a compaction wrote copy_records' output into `snapshot`: the records are read from
  /// there from now on, at `at`.
  void rebase(bytes_ptr snapshot, const std::vector<std::size_t>& at) {
    std::vector<entry> kept;
    kept.reserve(live_);
    std::size_t i = 0;
    for (const entry& e : entries_) {
      if (e.removed) continue;
      kept.push_back(e);
      kept.back().chunk = 0;
      kept.back().body = at[i++];
    }
    entries_ = std::move(kept);
    chunks_.assign(1, std::move(snapshot));
    reindex();
  }

 private:
  struct entry {
    std::uint64_t seq;
    std::int64_t completed_at;  // us since the epoch
    std::uint32_t user;         // into users_
    std::uint32_t chunk;        // into chunks_
    std::size_t body;           // where the record's body starts in its chunk
    std::uint32_t body_size;
    bool removed;
  };

  event_id id_of(const entry& e) const {
    log::reader r(std::string_view(*chunks_[e.chunk]).substr(e.body + 1 + 8, 16));  // type byte, seq, then the id
    return r.id();
  }

  event decode(const entry& e) const {
    log::reader r(std::string_view(*chunks_[e.chunk]).substr(e.body + 1, e.body_size - 1));
    log::event_view v;
    v.read(r);  // checked when it was read from the log
    return v.materialise();
  }

  std::uint32_t user_number(std::string_view user) {
    // Few users, and a log's records mostly repeat the previous one's.
    if (last_user_ < users_.size() && users_[last_user_] == user) return last_user_;
    const auto found = std::find(users_.begin(), users_.end(), user);
    last_user_ = static_cast<std::uint32_t>(found - users_.begin());
    if (found == users_.end()) {
      users_.emplace_back(user);
      user_counts_.push_back(0);
    }
    return last_user_;
  }

  void reindex() {
    positions_.clear();
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (!entries_[i].removed) positions_.set(entries_[i].seq, static_cast<std::uint32_t>(i + 1));
    sorted_ = true;
  }

  std::vector<bytes_ptr> chunks_;
  std::vector<entry> entries_;  // in seq order once loaded; removed ones until the next compaction
  seq_sizes positions_;         // seq -> position in entries_ + 1
  id_index ids_;                // id -> seq
  std::vector<std::string> users_;
  std::vector<std::size_t> user_counts_;
  std::uint32_t last_user_ = 0;
  std::size_t live_ = 0;
  bool sorted_ = true;
};

}  // namespace outbox::detail::file
