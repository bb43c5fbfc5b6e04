#pragma once
/// \file
/// `outbox::memory_storage`: a thread-safe storage that keeps everything in memory. Fast and
/// exact, but gone with the process: for tests, caches of data that can be rebuilt, and as the
/// reference the durable storages are checked against.
///
/// Claims cost O(batch * log n): each ordering key has a line of its undelivered events in
/// append order, and only the head of a line sits in the per-user `ready` set (ordered by
/// priority, then seq) or `waiting` set (ordered by retry_after). Claiming takes from the front
/// of `ready`; due retries move from the front of `waiting`; expired leases leave from the front
/// of `leases`. No operation on the delivery path walks all events. Ids find their events through
/// a flat hash table (detail/id_index.hpp) and a line keeps its members in a ring of seqs
/// (detail/seq_deque.hpp), neither with a node per event.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "outbox/detail/id_index.hpp"
#include "outbox/detail/seq_deque.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox {

namespace detail {

struct transparent_string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// What one operation changed, for storages that persist the memory state (the file storage
/// logs exactly these). Entries may repeat; the last state in memory is what counts.
struct change_journal {
  std::vector<std::uint64_t> events;           ///< seqs written or rewritten
  std::vector<std::uint64_t> removed_events;   ///< seqs deleted
  std::vector<std::pair<std::string, std::string>> entities;          ///< (collection, id) written
  std::vector<std::pair<std::string, std::string>> removed_entities;  ///< (collection, id) deleted
  [[nodiscard]] bool empty() const noexcept {
    return events.empty() && removed_events.empty() && entities.empty() && removed_entities.empty();
  }
  void clear() noexcept {
    events.clear();
    removed_events.clear();
    entities.clear();
    removed_entities.clear();
  }
};

/// The whole state of a memory storage; not synchronised (memory_storage locks around it).
class memory_state {
 public:
  /// Every later change is noted in `journal` until it is set back to nullptr.
  void set_journal(change_journal* journal) noexcept { journal_ = journal; }

  /// Lease tokens continue from here (a persistent storage starts each run somewhere new).
  void set_next_lease(std::uint64_t next) noexcept { next_lease_ = next; }
  [[nodiscard]] std::uint64_t next_seq() const noexcept { return next_seq_; }
  void set_next_seq(std::uint64_t next) noexcept { next_seq_ = std::max(next_seq_, next); }

  [[nodiscard]] const std::map<std::uint64_t, event>& events() const noexcept { return events_; }
  [[nodiscard]] const auto& entities() const noexcept { return entities_; }
  [[nodiscard]] const event* event_at(std::uint64_t seq) const {
    auto found = events_.find(seq);
    return found == events_.end() ? nullptr : &found->second;
  }
  [[nodiscard]] const entity_record* entity_at(const std::pair<std::string, std::string>& key) const {
    auto found = entities_.find(key);
    return found == entities_.end() ? nullptr : &found->second;
  }

  /// Puts an event in exactly the given state (any status), replacing the one with its seq.
  /// For replaying a log; the caller has validated the event's fields. False, changing
  /// nothing, if its id belongs to another event: a log that says so contradicts itself.
  [[nodiscard]] bool restore_event(const event& e) {
    if (const auto owner = by_id_.find(e.id); owner && *owner != e.seq && events_.contains(*owner)) return false;
    if (events_.contains(e.seq)) unlink(e.seq);
    link(e);
    next_seq_ = std::max(next_seq_, e.seq + 1);
    return true;
  }
  void restore_removed_event(std::uint64_t seq) {
    if (events_.contains(seq)) unlink(seq);
  }
  /// Puts an entity row in exactly the given state. False, changing nothing, if another row of
  /// its collection and user holds its natural key.
  [[nodiscard]] bool restore_entity(const entity_record& row) {
    const entity_key key{row.collection, row.id};
    if (!row.natural_key.empty()) {
      const auto holder = natural_keys_.find({row.collection, row.user_id, row.natural_key});
      if (holder != natural_keys_.end() && holder->second != row.id && entities_.contains({row.collection, holder->second}))
        return false;
    }
    auto found = entities_.find(key);
    if (found != entities_.end()) unindex_entity(found->second);
    auto& stored = entities_.insert_or_assign(key, row).first->second;
    index_entity(stored);
    return true;
  }
  void restore_removed_entity(const std::pair<std::string, std::string>& key) {
    auto found = entities_.find(key);
    if (found == entities_.end()) return;
    unindex_entity(found->second);
    entities_.erase(found);
  }

  result<void> append(std::span<event> events) {
    if (auto valid = check_append(events); !valid) return valid;
    append_checked(events);
    return {};
  }

  /// `append` in two steps, for a storage that logs the new events before indexing them:
  /// whether `append(events)` would succeed, changing nothing...
  [[nodiscard]] result<void> check_append(std::span<const event> events) const {
    bool ascending = true;  // as a generator makes them: then no id can be there twice
    for (std::size_t i = 0; i < events.size(); ++i) {
      const event& e = events[i];
      if (!acceptable_new(e)) return validate_new(e);  // a result only to say what is wrong
      if (i > 0 && !(events[i - 1].id < e.id)) ascending = false;
    }
    if (ascending) return {};
    std::vector<event_id> fresh;  // sorted, to find an id given twice: cheaper than a hash set
    fresh.reserve(events.size());
    for (const event& e : events) fresh.push_back(e.id);
    std::sort(fresh.begin(), fresh.end());
    if (auto twice = std::adjacent_find(fresh.begin(), fresh.end()); twice != fresh.end())
      return error(errc::invalid_argument, "duplicate event id " + twice->to_string());
    return {};
  }
  /// ...and the append itself, after a successful check with no change in between. The events
  /// get seqs next_seq(), next_seq() + 1, ... in order, and lease 0, as with `append`, and are
  /// moved into the index: the caller keeps their ids, seqs and scalar members, not their strings.
  void append_checked(std::span<event> events) {
    // A batch mostly has one user, and often runs of one ordering key: look each up once per run.
    user_state* user = nullptr;
    line* l = nullptr;
    const event* last = nullptr;  // the previous event, as stored (its original is moved from)
    for (event& e : events) {
      if (last == nullptr || e.user_id != last->user_id) {
        user = &user_of(e);
        l = nullptr;
      }
      if (l == nullptr || e.ordering_key != last->ordering_key) l = &user->lines[e.ordering_key];
      last = &insert_event(e, *user, *l);  // never erases a line: `l` stays valid
    }
  }

  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    if (request.limit == 0) return std::size_t{0};
    expire_leases(request.now);
    auto found = users_.find(request.user_id);
    if (found == users_.end()) return std::size_t{0};
    user_state& user = found->second;
    promote_due(user, request.now);
    std::size_t claimed = 0;
    while (claimed < request.limit && !user.ready.empty()) {
      const std::uint64_t seq = user.ready.begin()->second;
      event& e = events_.at(seq);
      line& l = user.lines.at(e.ordering_key);
      unqueue(user, l);
      move_status(user, e, status::processing);
      ++e.attempts;
      e.lease = next_lease_++;
      e.lease_until = request.lease_until;
      e.updated_at = request.now;
      ++l.in_flight;
      leases_.emplace(e.lease_until, seq);
      out.push_back(e);
      note(seq);
      ++claimed;
    }
    return claimed;
  }

  result<std::size_t> record(std::span<outcome> outcomes) {
    for (const outcome& o : outcomes) {
      if (o.to == status::processing)
        return error(errc::invalid_argument, "an outcome cannot move an event to processing");
    }
    std::size_t applied = 0;
    for (outcome& o : outcomes) {
      o.applied = false;
      const auto found = by_id_.find(o.id);
      if (!found) continue;
      event& e = events_.at(*found);
      if (e.status != status::processing || e.lease != o.lease) continue;  // stale result
      user_state& user = user_of(e);
      line& l = user.lines.at(e.ordering_key);
      leases_.erase({e.lease_until, e.seq});
      --l.in_flight;
      e.lease = 0;
      e.lease_until = {};
      e.attempts = o.attempts;
      e.updated_at = o.at;
      if (!o.error.empty()) e.last_error = o.error;
      switch (o.to) {
        case status::completed:
          e.completed_at = o.at;
          e.remote_id = o.remote_id;
          completed_.emplace_hint(completed_.end(), o.at, e.seq);  // completions come in time order
          break;
        case status::failed: e.retry_after = o.retry_after; break;
        case status::pending:
        case status::dead:
        case status::processing: break;
      }
      move_status(user, e, o.to);
      if (is_terminal(o.to)) l.members.erase(e.seq);
      refresh(user, e.ordering_key, l);
      write_back(e);
      note(e.seq);
      o.applied = true;
      ++applied;
    }
    return applied;
  }

  [[nodiscard]] std::optional<event> find(event_id id) const {
    const auto found = by_id_.find(id);
    if (!found) return std::nullopt;
    return events_.at(*found);
  }

  [[nodiscard]] std::vector<event> query(const event_query& q) const {
    std::vector<event> page;
    if (q.limit == 0) return page;
    if (!q.status_is) {
      for (auto it = events_.upper_bound(q.after_seq); it != events_.end() && page.size() < q.limit; ++it) {
        if (!q.user_id || it->second.user_id == *q.user_id) page.push_back(it->second);
      }
      return page;
    }
    // By status: merge the users' status indexes (there are few users, many events).
    std::vector<std::uint64_t> seqs;
    for (const auto& [name, user] : users_) {
      if (q.user_id && name != *q.user_id) continue;
      const auto& index_set = user.by_status[index(*q.status_is)];
      std::size_t taken = 0;
      for (auto it = index_set.upper_bound(q.after_seq); it != index_set.end() && taken < q.limit; ++it, ++taken)
        seqs.push_back(*it);
    }
    std::sort(seqs.begin(), seqs.end());
    if (seqs.size() > q.limit) seqs.resize(q.limit);
    page.reserve(seqs.size());
    for (auto seq : seqs) page.push_back(events_.at(seq));
    return page;
  }

  /// Changes nothing stored: an expired lease is counted as processing until the next claim.
  [[nodiscard]] event_stats stats(std::optional<std::string_view> user_filter, timestamp now) {
    event_stats stats;
    std::optional<std::uint64_t> oldest_pending;  // lowest seq, over the users asked for
    std::optional<std::uint64_t> oldest_due;
    auto lowest = [](std::optional<std::uint64_t>& slot, std::uint64_t seq) {
      if (!slot || seq < *slot) slot = seq;
    };
    // One user's state is found; all users' are walked.
    auto user_it = users_.begin(), users_end = users_.end();
    if (user_filter) std::tie(user_it, users_end) = users_.equal_range(*user_filter);
    for (; user_it != users_end; ++user_it) {
      auto& user = user_it->second;
      for (std::size_t s = 0; s < status_count; ++s) stats.counts[s] += user.by_status[s].size();
      const auto& pending = user.by_status[index(status::pending)];
      if (!pending.empty()) lowest(oldest_pending, *pending.begin());
      promote_due(user, now);
      if (!user.ready_by_seq.empty()) lowest(oldest_due, *user.ready_by_seq.begin());
    }
    if (oldest_pending) stats.oldest_pending_age = now - events_.at(*oldest_pending).created_at;
    if (oldest_due) stats.oldest_due_age = now - events_.at(*oldest_due).created_at;
    return stats;
  }

  [[nodiscard]] std::optional<timestamp> next_wake(std::string_view user_id) const {
    std::optional<timestamp> wake;
    if (!leases_.empty()) wake = leases_.begin()->first;
    auto found = users_.find(user_id);
    if (found != users_.end() && !found->second.waiting.empty()) {
      const timestamp retry = found->second.waiting.begin()->first;
      if (!wake || retry < *wake) wake = retry;
    }
    return wake;
  }

  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    std::size_t count = 0;
    for (const event_id& id : ids) {
      const auto found = by_id_.find(id);
      if (found && reset_one(events_.at(*found), now)) ++count;
    }
    return count;
  }

  result<std::size_t> reset_dead(std::optional<std::string_view> user_filter, timestamp now) {
    std::vector<std::uint64_t> seqs;
    for (const auto& [name, user] : users_) {
      if (user_filter && name != *user_filter) continue;
      const auto& dead = user.by_status[index(status::dead)];
      seqs.insert(seqs.end(), dead.begin(), dead.end());
    }
    for (auto seq : seqs) reset_one(events_.at(seq), now);
    return seqs.size();
  }

  result<std::size_t> purge_completed(timestamp before) {
    std::size_t count = 0;
    while (!completed_.empty() && completed_.begin()->first < before) {
      const std::uint64_t seq = completed_.begin()->second;
      completed_.erase(completed_.begin());
      auto found = events_.find(seq);
      user_of(found->second).by_status[index(status::completed)].erase(seq);
      by_id_.erase(found->second.id);
      events_.erase(found);
      if (journal_) journal_->removed_events.push_back(seq);
      ++count;
    }
    return count;
  }

  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    std::size_t count = 0;
    for (auto& [name, user] : users_) {
      // Failed events are few (one per key waiting to retry at most, plus reset leftovers),
      // and this runs only after the wall clock stepped back, so a walk over them is fine.
      for (std::uint64_t seq : user.by_status[index(status::failed)]) {
        event& e = events_.at(seq);
        if (e.retry_after <= retry_limit) continue;
        e.retry_after = retry_limit;
        line& l = user.lines.at(e.ordering_key);
        refresh(user, e.ordering_key, l);
        note(seq);
        ++count;
      }
    }
    std::vector<std::uint64_t> late;
    for (auto it = leases_.upper_bound({lease_limit, std::numeric_limits<std::uint64_t>::max()});
         it != leases_.end(); ++it)
      late.push_back(it->second);
    for (auto seq : late) {
      event& e = events_.at(seq);
      leases_.erase({e.lease_until, seq});
      e.lease_until = lease_limit;
      leases_.emplace(lease_limit, seq);
      note(seq);
      ++count;
    }
    return count;
  }

  // ---- entities ------------------------------------------------------------------------------

  result<void> commit(const entity_change& c) {
    const entity_key key{c.entity.collection, c.entity.id};
    auto found = entities_.find(key);
    const std::uint64_t current = found == entities_.end() ? 0 : found->second.version;
    if (current != c.expected_version)
      return error(errc::conflict, "entity " + c.entity.collection + "/" + c.entity.id + " changed since it was read");
    if (c.erase && found == entities_.end())
      return error(errc::conflict, "entity " + c.entity.collection + "/" + c.entity.id + " no longer exists");
    if (!c.erase && !c.entity.natural_key.empty()) {
      auto owner = natural_keys_.find({c.entity.collection, c.entity.user_id, c.entity.natural_key});
      if (owner != natural_keys_.end() && owner->second != c.entity.id)
        return error(errc::conflict, "natural key " + c.entity.natural_key + " belongs to " + owner->second);
    }
    event* target = nullptr;
    if (c.op == entity_change::event_op::append) {
      if (auto valid = validate_new(c.event); !valid) return valid;
    } else {
      const auto t = by_id_.find(c.target);
      if (!t) return error(errc::conflict, "event " + c.target.to_string() + " no longer exists");
      target = &events_.at(*t);
      if (target->status != status::pending || target->attempts != 0)
        return error(errc::conflict, "event " + c.target.to_string() + " was claimed since it was read");
    }

    // Everything is checked: from here on nothing fails, so the change applies whole.
    if (found != entities_.end()) unindex_entity(found->second);
    if (c.erase) {
      if (found != entities_.end()) entities_.erase(found);
      if (journal_) journal_->removed_entities.push_back(key);
    } else {
      entity_record row = c.entity;
      row.version = current + 1;
      if (found != entities_.end()) row.created_at = found->second.created_at;
      auto& stored = entities_.insert_or_assign(key, std::move(row)).first->second;
      index_entity(stored);
      if (journal_) journal_->entities.push_back(key);
    }
    switch (c.op) {
      case entity_change::event_op::append: {
        event e = c.event;
        append_checked(std::span<event>(&e, 1));
        break;
      }
      case entity_change::event_op::replace:
        target->type = c.event.type;
        target->payload = c.event.payload;
        target->updated_at = c.event.updated_at;
        note(target->seq);
        break;
      case entity_change::event_op::drop: remove_event(target->seq); break;
    }
    return {};
  }

  [[nodiscard]] std::optional<entity_record> find_entity(std::string_view collection, std::string_view id) const {
    auto found = entities_.find(entity_key{std::string(collection), std::string(id)});
    if (found == entities_.end()) return std::nullopt;
    return found->second;
  }

  [[nodiscard]] std::optional<entity_record> find_entity_by_key(std::string_view collection, std::string_view user,
                                                                std::string_view natural_key) const {
    auto owner = natural_keys_.find({std::string(collection), std::string(user), std::string(natural_key)});
    if (owner == natural_keys_.end()) return std::nullopt;
    return find_entity(collection, owner->second);
  }

  [[nodiscard]] std::vector<entity_record> query_entities(const entity_query& q) const {
    std::vector<const entity_record*> hits;
    const timestamp from = q.from.value_or(timestamp::min());
    auto it = q.user_id ? by_time_.lower_bound({q.collection, *q.user_id, from, std::string()})
                        : by_time_.lower_bound({q.collection, std::string(), timestamp::min(), std::string()});
    for (; it != by_time_.end(); ++it) {
      const auto& [collection, user, when, id] = *it;
      if (collection != q.collection || (q.user_id && user != *q.user_id)) break;
      if (when < from) continue;
      if (q.until && when >= *q.until) {
        if (q.user_id) break;  // sorted by time within one user
        continue;
      }
      const entity_record& row = entities_.at({collection, id});
      if (q.sync && row.sync != *q.sync) continue;
      hits.push_back(&row);
      if (q.user_id && hits.size() >= q.limit) break;
    }
    std::stable_sort(hits.begin(), hits.end(), [](const entity_record* a, const entity_record* b) {
      return std::tie(a->occurred_at, a->id) < std::tie(b->occurred_at, b->id);
    });
    if (hits.size() > q.limit) hits.resize(q.limit);
    std::vector<entity_record> rows;
    rows.reserve(hits.size());
    for (const auto* row : hits) rows.push_back(*row);
    return rows;
  }

 private:
  /// The undelivered events of one ordering key, in append order, and where its head is queued.
  struct line {
    seq_deque members;
    int in_flight = 0;
    enum class queue : std::uint8_t { none, ready, waiting } queued = queue::none;
    std::pair<std::int64_t, std::uint64_t> ready_entry{};  // (-priority, seq) when ready; 64-bit: -INT_MIN
    std::pair<timestamp, std::uint64_t> waiting_entry{};  // (retry_after, seq) when waiting
  };

  struct user_state {
    std::unordered_map<std::string, line, transparent_string_hash, std::equal_to<>> lines;
    std::set<std::pair<std::int64_t, std::uint64_t>> ready;  // heads claimable now
    std::set<std::uint64_t> ready_by_seq;                  // the same heads, oldest first
    std::set<std::pair<timestamp, std::uint64_t>> waiting; // failed heads, earliest retry first
    std::array<std::set<std::uint64_t>, status_count> by_status;
  };

  /// Whether `e` may be appended: the rules, as a test cheap enough for every event of a batch.
  [[nodiscard]] bool acceptable_new(const event& e) const noexcept {
    return !e.id.is_nil() && e.status == status::pending && !by_id_.contains(e.id);
  }
  /// The same rules, saying which one `e` breaks.
  result<void> validate_new(const event& e) const {
    if (acceptable_new(e)) return {};
    if (e.id.is_nil()) return error(errc::invalid_argument, "event id must not be nil");
    if (e.status != status::pending)
      return error(errc::invalid_argument, "a new event must be pending, got " + std::string(to_string(e.status)));
    return error(errc::invalid_argument, "duplicate event id " + e.id.to_string());
  }

  /// Sequence numbers only grow, so every index takes the new event at its end: the hints
  /// make those inserts O(1) instead of a walk down trees that no longer fit in cache.
  /// `user` and `l` are the event's user and line. Moves `e` in; returns it as stored.
  const event& insert_event(event& e, user_state& user, line& l) {
    e.seq = next_seq_++;
    e.lease = 0;
    const event& stored = events_.emplace_hint(events_.end(), e.seq, std::move(e))->second;
    by_id_.insert_or_assign(stored.id, stored.seq);
    auto& pending = user.by_status[index(status::pending)];
    pending.insert(pending.end(), stored.seq);
    const bool new_head = l.members.empty();
    l.members.insert(stored.seq);
    // Behind an existing head the new event changes nothing about where the line is queued.
    if (new_head) refresh(user, stored.ordering_key, l);
    note(stored.seq);
    return stored;
  }

  /// Deletes a pending event that no transport has seen.
  void remove_event(std::uint64_t seq) {
    auto found = events_.find(seq);
    const std::string key = found->second.ordering_key;
    user_state& user = user_of(found->second);
    user.by_status[index(found->second.status)].erase(seq);
    by_id_.erase(found->second.id);
    events_.erase(found);
    line& l = user.lines.at(key);
    l.members.erase(seq);
    refresh(user, key, l);
    if (journal_) journal_->removed_events.push_back(seq);
  }

  /// Delivery outcomes written onto the entity, in the transaction that records them: the
  /// backend's id always; synced only if no newer change of the entity is waiting.
  void write_back(const event& e) {
    if (e.entity_type.empty() || (e.status != status::completed && e.status != status::dead)) return;
    auto found = entities_.find({e.entity_type, e.entity_id});
    if (found == entities_.end()) return;
    entity_record& row = found->second;
    if (e.status == status::completed) {
      if (!e.remote_id.empty()) row.remote_id = e.remote_id;
      if (row.last_event == e.id) {
        row.sync = sync_status::synced;
        row.sync_error.clear();
      }
    } else {
      row.sync_error = e.last_error;
    }
    ++row.version;
    if (journal_) journal_->entities.push_back(found->first);
  }

  void index_entity(const entity_record& row) {
    by_time_.insert({row.collection, row.user_id, row.occurred_at, row.id});
    if (!row.natural_key.empty()) natural_keys_[{row.collection, row.user_id, row.natural_key}] = row.id;
  }
  void unindex_entity(const entity_record& row) {
    by_time_.erase({row.collection, row.user_id, row.occurred_at, row.id});
    if (!row.natural_key.empty()) natural_keys_.erase({row.collection, row.user_id, row.natural_key});
  }

  void note(std::uint64_t seq) {
    if (journal_) journal_->events.push_back(seq);
  }

  /// Adds an event in any status to every index it belongs in.
  void link(const event& stored) {
    auto it = events_.insert_or_assign(stored.seq, stored).first;
    const event& e = it->second;
    by_id_.insert_or_assign(e.id, e.seq);
    user_state& user = user_of(e);
    user.by_status[index(e.status)].insert(e.seq);
    if (e.status == status::completed) completed_.emplace(e.completed_at, e.seq);
    if (is_terminal(e.status)) return;
    line& l = user.lines[e.ordering_key];
    l.members.insert(e.seq);
    if (e.status == status::processing) {
      ++l.in_flight;
      leases_.emplace(e.lease_until, e.seq);
    }
    refresh(user, e.ordering_key, l);
  }

  /// Removes an event from every index and from the store.
  void unlink(std::uint64_t seq) {
    auto it = events_.find(seq);
    const event e = it->second;  // a copy: the map entry goes below
    user_state& user = user_of(e);
    user.by_status[index(e.status)].erase(seq);
    if (e.status == status::completed) completed_.erase({e.completed_at, seq});
    by_id_.erase(e.id);
    events_.erase(it);
    if (is_terminal(e.status)) return;
    line& l = user.lines.at(e.ordering_key);
    if (e.status == status::processing) {
      --l.in_flight;
      leases_.erase({e.lease_until, seq});
    }
    l.members.erase(seq);
    refresh(user, e.ordering_key, l);
  }

  static constexpr std::size_t index(status s) noexcept { return static_cast<std::size_t>(s); }

  user_state& user_of(const event& e) {
    auto found = users_.find(e.user_id);
    if (found != users_.end()) return found->second;
    return users_.emplace(e.user_id, user_state{}).first->second;
  }

  void move_status(user_state& user, event& e, status to) {
    user.by_status[index(e.status)].erase(e.seq);
    e.status = to;
    auto& target = user.by_status[index(to)];
    target.insert(target.end(), e.seq);  // mostly in seq order; a wrong hint costs only a lookup
  }

  void unqueue(user_state& user, line& l) {
    if (l.queued == line::queue::ready) {
      user.ready.erase(l.ready_entry);
      user.ready_by_seq.erase(l.ready_entry.second);
    } else if (l.queued == line::queue::waiting) {
      user.waiting.erase(l.waiting_entry);
    }
    l.queued = line::queue::none;
  }

  void enqueue_ready(user_state& user, line& l, const event& e) {
    l.ready_entry = {-static_cast<std::int64_t>(e.priority), e.seq};
    user.ready.insert(l.ready_entry);
    user.ready_by_seq.insert(e.seq);
    l.queued = line::queue::ready;
  }

  /// Re-derives where a line's head belongs after any change to the line. Erases empty lines.
  void refresh(user_state& user, const std::string& key, line& l) {
    unqueue(user, l);
    if (l.in_flight > 0) return;
    if (l.members.empty()) {
      user.lines.erase(key);  // `key` may alias the erased map key: nothing below uses it
      return;
    }
    const event& head = events_.at(l.members.front());
    if (head.status == status::pending) {
      enqueue_ready(user, l, head);
    } else if (head.status == status::failed) {
      l.waiting_entry = {head.retry_after, head.seq};
      user.waiting.insert(l.waiting_entry);
      l.queued = line::queue::waiting;
    }
  }

  /// Moves failed heads whose retry time has come from `waiting` to `ready`.
  void promote_due(user_state& user, timestamp now) {
    while (!user.waiting.empty() && user.waiting.begin()->first <= now) {
      const std::uint64_t seq = user.waiting.begin()->second;
      user.waiting.erase(user.waiting.begin());
      const event& e = events_.at(seq);
      line& l = user.lines.at(e.ordering_key);
      enqueue_ready(user, l, e);
    }
  }

  /// Leases that ran out belong to a claimer that died or hung: the event goes back to
  /// pending, or to dead if the lost attempt was its last.
  void expire_leases(timestamp now) {
    while (!leases_.empty() && leases_.begin()->first <= now) {
      const std::uint64_t seq = leases_.begin()->second;
      leases_.erase(leases_.begin());
      event& e = events_.at(seq);
      user_state& user = user_of(e);
      line& l = user.lines.at(e.ordering_key);
      --l.in_flight;
      e.lease = 0;
      e.lease_until = {};
      e.updated_at = now;
      const bool last = e.attempts >= e.max_attempts;
      e.last_error = last ? "lease expired during the last attempt" : "lease expired";
      move_status(user, e, last ? status::dead : status::pending);
      if (last) l.members.erase(seq);
      refresh(user, e.ordering_key, l);
      write_back(e);
      note(seq);
    }
  }

  bool reset_one(event& e, timestamp now) {
    if (e.status != status::failed && e.status != status::dead) return false;
    user_state& user = user_of(e);
    const bool was_dead = e.status == status::dead;
    move_status(user, e, status::pending);
    e.attempts = 0;
    e.retry_after = {};
    e.updated_at = now;
    line& l = user.lines[e.ordering_key];
    if (was_dead) l.members.insert(e.seq);
    refresh(user, e.ordering_key, l);
    note(e.seq);
    return true;
  }

  std::map<std::uint64_t, event> events_;  // by seq: append order
  id_index by_id_;
  std::map<std::string, user_state, std::less<>> users_;
  std::set<std::pair<timestamp, std::uint64_t>> leases_;     // (lease_until, seq), all users
  std::set<std::pair<timestamp, std::uint64_t>> completed_;  // (completed_at, seq), for purge
  std::uint64_t next_seq_ = 1;
  std::uint64_t next_lease_ = 1;

  using entity_key = std::pair<std::string, std::string>;  // (collection, id)
  std::map<entity_key, entity_record> entities_;
  std::map<std::tuple<std::string, std::string, std::string>, std::string> natural_keys_;  // (collection, user, key) -> id
  std::set<std::tuple<std::string, std::string, timestamp, std::string>> by_time_;  // (collection, user, occurred_at, id)
  change_journal* journal_ = nullptr;
};

}  // namespace detail

/// A thread-safe, in-memory `outbox::storage` and `outbox::entity_storage`. Movable; every
/// operation takes one mutex, so each is atomic.
class memory_storage {
  struct shared {
    std::mutex mutex;
    detail::memory_state state;
  };
  std::unique_ptr<shared> shared_;

  template <class F>
  auto locked(F&& f) {
    std::lock_guard lock(shared_->mutex);
    return f(shared_->state);
  }

 public:
  memory_storage() : shared_(std::make_unique<shared>()) {}

  result<void> append(std::span<event> events) { return locked([&](auto& s) { return s.append(events); }); }
  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    return locked([&](auto& s) { return s.claim(request, out); });
  }
  result<std::size_t> record(std::span<outcome> outcomes) {
    return locked([&](auto& s) { return s.record(outcomes); });
  }
  result<std::optional<event>> find(event_id id) {
    return locked([&](auto& s) { return result<std::optional<event>>(s.find(id)); });
  }
  result<std::vector<event>> query(const event_query& q) {
    return locked([&](auto& s) { return result<std::vector<event>>(s.query(q)); });
  }
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
    return locked([&](auto& s) { return result<event_stats>(s.stats(user, now)); });
  }
  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp /*now*/) {
    return locked([&](auto& s) { return result<std::optional<timestamp>>(s.next_wake(user)); });
  }
  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    return locked([&](auto& s) { return s.reset(ids, now); });
  }
  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    return locked([&](auto& s) { return s.reset_dead(user, now); });
  }
  result<std::size_t> purge_completed(timestamp before) {
    return locked([&](auto& s) { return s.purge_completed(before); });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return locked([&](auto& s) { return s.clamp_schedule(retry_limit, lease_limit); });
  }

  result<void> commit(const entity_change& change) { return locked([&](auto& s) { return s.commit(change); }); }
  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
    return locked([&](auto& s) { return result<std::optional<entity_record>>(s.find_entity(collection, id)); });
  }
  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key) {
    return locked([&](auto& s) {
      return result<std::optional<entity_record>>(s.find_entity_by_key(collection, user, natural_key));
    });
  }
  result<std::vector<entity_record>> query_entities(const entity_query& q) {
    return locked([&](auto& s) { return result<std::vector<entity_record>>(s.query_entities(q)); });
  }

};

}  // namespace outbox
