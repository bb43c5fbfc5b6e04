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
/// A query naming an entity id or a type reads that value's events from an index of the field
/// (the statement in detail/field_index.hpp), here without a string per event: each entry keeps
/// a 32-bit hash of each field, and the first query by a field sorts (hash, position) pairs of the
/// live entries once; a query takes its value's run of them and checks each decoded event with
/// `event_query::matches`, which also settles hash collisions. Anything that moves entries
/// (a put, the sort at the end of an open, a compaction) drops those pairs; a removal only marks
/// its entry, which a query skips.
///
/// Not synchronised: the file storage holds its mutex around every use.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
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
                        static_cast<std::uint32_t>(chunks_.size() - 1), c.body, c.body_size,
                        {field_hash(c.entity_id), type_hash(c.type)}, false});
    drop_field_indexes();
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
    drop_field_indexes();
  }

  [[nodiscard]] std::optional<event> find(const event_id& id) const {
    const auto seq = seq_of(id);
    if (!seq) return std::nullopt;
    return decode(entries_[positions_.get(*seq) - 1]);
  }

  /// The archived events that pass `q`'s filters, after `q.after_seq`, in seq order, at most
  /// `q.limit`. One naming an entity id (else a type) reads that value's entries from the
  /// field's index, as the memory index does.
  [[nodiscard]] std::vector<event> query(const event_query& q) const {
    std::vector<event> page;
    if (live_ == 0 || q.limit == 0 || (q.status_is && *q.status_is != status::completed)) return page;
    std::optional<std::uint32_t> only;
    if (q.user_id) {
      const auto found = std::find(users_.begin(), users_.end(), *q.user_id);
      if (found == users_.end()) return page;
      only = static_cast<std::uint32_t>(found - users_.begin());
    }
    auto take = [&](const entry& e) {
      if (e.removed || (only && e.user != *only)) return;  // decoded only if it may match
      event decoded = decode(e);
      if (q.matches(decoded)) page.push_back(std::move(decoded));
    };
    if (q.entity_id || q.type) {
      const std::size_t f = q.entity_id ? by_entity : by_type;
      const std::vector<std::uint64_t>& index = field_index(f);
      const std::uint64_t hash = field_hash(q.entity_id ? *q.entity_id : *q.type);
      // The value's run: (hash, position) pairs, positions (so seqs) ascending within it.
      auto it = std::lower_bound(index.begin(), index.end(), hash << 32);
      const auto end = std::upper_bound(it, index.end(), hash << 32 | 0xffffffffU);
      it = std::upper_bound(it, end, q.after_seq, [&](std::uint64_t seq, std::uint64_t slot) {
        return seq < entries_[static_cast<std::uint32_t>(slot)].seq;
      });
      for (; it != end && page.size() < q.limit; ++it) take(entries_[static_cast<std::uint32_t>(*it)]);
      return page;
    }
    auto it = std::upper_bound(entries_.begin(), entries_.end(), q.after_seq,
                               [](std::uint64_t seq, const entry& e) { return seq < e.seq; });
    for (; it != entries_.end() && page.size() < q.limit; ++it) take(*it);
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
    last_type_known_ = false;  // it viewed the chunks just dropped
    reindex();
    drop_field_indexes();
  }

 private:
  struct entry {
    std::uint64_t seq;
    std::int64_t completed_at;  // us since the epoch
    std::uint32_t user;         // into users_
    std::uint32_t chunk;        // into chunks_
    std::size_t body;           // where the record's body starts in its chunk
    std::uint32_t body_size;
    std::array<std::uint32_t, 2> field_hashes;  // by_entity, by_type
    bool removed;
  };
  static constexpr std::size_t by_entity = 0, by_type = 1;

  static std::uint32_t field_hash(std::string_view value) noexcept {
    return static_cast<std::uint32_t>(std::hash<std::string_view>{}(value));
  }

  std::uint32_t type_hash(std::string_view type) {
    // Few types, and a log's records mostly repeat the previous one's (viewed in kept bytes).
    if (!last_type_known_ || type != last_type_) {
      last_type_ = type;
      last_type_hash_ = field_hash(type);
      last_type_known_ = true;
    }
    return last_type_hash_;
  }

  /// Field `f`'s index: (hash << 32 | position) of every live entry, sorted; built when first asked.
  const std::vector<std::uint64_t>& field_index(std::size_t f) const {
    std::vector<std::uint64_t>& index = field_indexes_[f];
    if (!field_indexed_[f]) {
      index.clear();
      index.reserve(live_);
      for (std::size_t i = 0; i < entries_.size(); ++i)
        if (!entries_[i].removed) index.push_back(std::uint64_t{entries_[i].field_hashes[f]} << 32 | i);
      std::sort(index.begin(), index.end());
      field_indexed_[f] = true;
    }
    return index;
  }

  void drop_field_indexes() noexcept { field_indexed_ = {}; }

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
  std::string_view last_type_;  // in chunks_, while last_type_known_
  std::uint32_t last_type_hash_ = 0;
  bool last_type_known_ = false;
  // Built by the first query by each field (under the storage's mutex, as every use is).
  mutable std::array<std::vector<std::uint64_t>, 2> field_indexes_;
  mutable std::array<bool, 2> field_indexed_{};
  std::size_t live_ = 0;
  bool sorted_ = true;
};

}  // namespace outbox::detail::file
