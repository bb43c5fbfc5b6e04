#pragma once
/// \file
/// `memory_state`: the in-memory index of events and entities behind `memory_storage`, and the
/// state the file storage replays its log into. Not synchronised: its owner locks around it.
///
/// Claims cost O(batch * log n): each ordering key has a line of its undelivered events in
/// append order, and only the head of a line sits in the per-user `ready` set (in claim order,
/// detail/lifecycle.hpp) or `waiting` set (ordered by retry_after). Claiming takes from the
/// front of `ready`; due retries move from the front of `waiting`; expired leases leave from the
/// front of `leases`. No operation on the delivery path walks all events. Events live in slots
/// found by seq (detail/event_store.hpp), ids find their seqs through a flat hash table
/// (detail/id_index.hpp), a line keeps its members in a ring of seqs (detail/seq_deque.hpp), and
/// the sets by status, the ready heads by seq, the leases and the completions are bitsets of
/// seqs (detail/seq_set.hpp): none of them has a tree node per event. The query indexes by entity
/// id and by type are built by the first query that filters on either field.

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "outbox/detail/change_journal.hpp"
#include "outbox/detail/entity_index.hpp"
#include "outbox/detail/event_store.hpp"
#include "outbox/detail/field_index.hpp"
#include "outbox/detail/id_index.hpp"
#include "outbox/detail/lifecycle.hpp"
#include "outbox/detail/seq_deque.hpp"
#include "outbox/detail/seq_set.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox {

namespace detail {

/// The whole state of a memory storage; not synchronised (memory_storage locks around it).
class memory_state {
 public:
  memory_state() = default;
  // The ready sets point into the lines: a copy would point into its source.
  memory_state(const memory_state&) = delete;
  memory_state& operator=(const memory_state&) = delete;
  memory_state(memory_state&&) = default;
  memory_state& operator=(memory_state&&) = default;
  ~memory_state() = default;

  /// Every later change is noted in `journal` until it is set back to nullptr.
  void set_journal(change_journal* journal) noexcept { journal_ = journal; }

  /// Lease tokens continue from here (a persistent storage starts each run somewhere new).
  void set_next_lease(std::uint64_t next) noexcept { next_lease_ = next; }
  [[nodiscard]] std::uint64_t next_seq() const noexcept { return next_seq_; }
  void set_next_seq(std::uint64_t next) noexcept { next_seq_ = std::max(next_seq_, next); }

  /// Every event, in seq order.
  [[nodiscard]] const event_store& events() const noexcept { return events_; }
  [[nodiscard]] const auto& entities() const noexcept { return entities_.rows(); }
  [[nodiscard]] const event* event_at(std::uint64_t seq) const { return events_.find(seq); }
  [[nodiscard]] const entity_record* entity_at(const std::pair<std::string, std::string>& key) const {
    return entities_.at(key);
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
    if (!row.natural_key.empty()) {
      const std::string* holder = entities_.natural_key_owner(row.collection, row.user_id, row.natural_key);
      if (holder && *holder != row.id && entities_.at({row.collection, *holder})) return false;
    }
    entities_.put({row.collection, row.id}, row);
    return true;
  }
  void restore_removed_entity(const std::pair<std::string, std::string>& key) { entities_.remove(key); }

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
      return lifecycle::duplicate_id(*twice);
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
      // The head of the ready set: its line is at hand, and it leaves both ready indexes here.
      const auto top = user.ready.begin();
      const std::uint64_t seq = top->first.second;
      line& l = *top->second.of;
      event& e = *top->second.head;
      user.ready.erase(top);
      user.ready_by_seq.erase(seq);
      l.queued = line::queue::none;
      move_status(user, e, status::processing);
      ++e.attempts;
      e.lease = next_lease_++;  // the claim order is lifecycle.hpp's: `ready` is sorted by claim_rank
      e.lease_until = request.lease_until;
      e.updated_at = request.now;
      ++l.in_flight;
      leases_.insert(e.lease_until, seq);
      out.push_back(e);
      note(seq);
      ++claimed;
    }
    return claimed;
  }

  result<std::size_t> record(std::span<outcome> outcomes) {
    if (auto valid = lifecycle::check_outcomes(outcomes); !valid) return valid.error();
    std::size_t applied = 0;
    user_state* user = nullptr;  // a batch has one user: look it up once
    std::string_view user_name;
    for (outcome& o : outcomes) {
      o.applied = false;
      const auto found = by_id_.find(o.id);
      if (!found) continue;
      event& e = events_.at(*found);
      if (!lifecycle::may_record(e.status, e.lease, o)) continue;  // stale result
      if (user == nullptr || e.user_id != user_name) {
        user = &user_of(e);
        user_name = e.user_id;  // the stored event's: it outlives the loop
      }
      line& l = user->lines.at(e.ordering_key);
      leases_.erase(e.lease_until, e.seq);
      --l.in_flight;
      lifecycle::apply_outcome(e, o);
      if (o.to == status::completed) completed_.insert(o.at, e.seq);
      move_status(*user, e, o.to);
      if (is_terminal(o.to)) l.members.erase(e.seq);
      refresh(*user, e.ordering_key, l);
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

  [[nodiscard]] std::vector<event> query(const event_query& q) {
    std::vector<event> page;
    if (q.limit == 0) return page;
    if (q.entity_id || q.type) {
      index_fields_from_now_on();
      // That entity's (or type's) events from the field's index, the other filters on each.
      const field_index& by_field = q.entity_id ? by_entity_ : by_type_;
      by_field.each_after(q.entity_id ? *q.entity_id : *q.type, q.after_seq, [&](std::uint64_t seq) {
        const event& e = events_.at(seq);
        if (q.matches(e)) page.push_back(e);
        return page.size() < q.limit;
      });
      return page;
    }
    if (!q.status_is) {
      for (auto it = events_.upper_bound(q.after_seq); it != events_.end() && page.size() < q.limit; ++it) {
        if (!q.user_id || it->user_id == *q.user_id) page.push_back(*it);
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
    std::optional<std::uint64_t> oldest_failed;
    std::optional<std::uint64_t> oldest_dead;
    auto lowest = [](std::optional<std::uint64_t>& slot, std::uint64_t seq) {
      if (!slot || seq < *slot) slot = seq;
    };
    // One user's state is found; all users' are walked.
    auto user_it = users_.begin(), users_end = users_.end();
    if (user_filter) std::tie(user_it, users_end) = users_.equal_range(*user_filter);
    for (; user_it != users_end; ++user_it) {
      auto& user = user_it->second;
      for (std::size_t s = 0; s < status_count; ++s) stats.counts[s] += user.by_status[s].size();
      auto first_in = [&](std::optional<std::uint64_t>& slot, status st) {
        if (const auto& seqs = user.by_status[index(st)]; !seqs.empty()) lowest(slot, *seqs.begin());
      };
      first_in(oldest_pending, status::pending);
      first_in(oldest_failed, status::failed);
      first_in(oldest_dead, status::dead);
      promote_due(user, now);
      if (!user.ready_by_seq.empty()) lowest(oldest_due, *user.ready_by_seq.begin());
    }
    auto age = [&](std::optional<std::uint64_t> seq) -> std::optional<duration> {
      if (!seq) return std::nullopt;
      return now - events_.at(*seq).created_at;
    };
    stats.oldest_pending_age = age(oldest_pending);
    stats.oldest_due_age = age(oldest_due);
    stats.oldest_failed_age = age(oldest_failed);
    stats.oldest_dead_age = age(oldest_dead);
    return stats;
  }

  [[nodiscard]] std::optional<timestamp> next_wake(std::string_view user_id) const {
    std::optional<timestamp> wake;
    if (!leases_.empty()) wake = leases_.front().first;
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
    while (!completed_.empty() && completed_.front().first < before) {
      const auto [completed_at, seq] = completed_.front();
      completed_.erase(completed_at, seq);
      const event& e = events_.at(seq);
      user_of(e).by_status[index(status::completed)].erase(seq);
      by_id_.erase(e.id);
      unindex_fields(e);
      events_.erase(seq);
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
    for (auto seq : leases_.after(lease_limit)) {
      event& e = events_.at(seq);
      leases_.erase(e.lease_until, seq);
      e.lease_until = lease_limit;
      leases_.insert(lease_limit, seq);
      note(seq);
      ++count;
    }
    return count;
  }

  // ---- entities ------------------------------------------------------------------------------

  [[nodiscard]] std::optional<entity_record> find_entity(std::string_view collection, std::string_view id) const {
    return entities_.find(collection, id);
  }
  [[nodiscard]] std::optional<entity_record> find_entity_by_key(std::string_view collection, std::string_view user,
                                                                std::string_view natural_key) const {
    return entities_.find_by_key(collection, user, natural_key);
  }
  [[nodiscard]] std::vector<entity_record> query_entities(const entity_query& q) const { return entities_.query(q); }

  result<void> commit(const entity_change& c) {
    const entity_index::key key{c.entity.collection, c.entity.id};
    const entity_record* found = entities_.at(key);
    const std::uint64_t current = found == nullptr ? 0 : found->version;
    if (current != c.expected_version)
      return error(errc::conflict, "entity " + c.entity.collection + "/" + c.entity.id + " changed since it was read");
    if (c.erase && found == nullptr)
      return error(errc::conflict, "entity " + c.entity.collection + "/" + c.entity.id + " no longer exists");
    if (!c.erase && !c.entity.natural_key.empty()) {
      const std::string* owner = entities_.natural_key_owner(c.entity.collection, c.entity.user_id, c.entity.natural_key);
      if (owner && *owner != c.entity.id)
        return error(errc::conflict, "natural key " + c.entity.natural_key + " belongs to " + *owner);
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
    if (c.erase) {
      entities_.remove(key);
      if (journal_) journal_->removed_entities.push_back(key);
    } else {
      entity_record row = c.entity;
      row.version = current + 1;
      if (found != nullptr) row.created_at = found->created_at;
      entities_.put(key, std::move(row));
      if (journal_) journal_->entities.push_back(key);
    }
    switch (c.op) {
      case entity_change::event_op::append: {
        event e = c.event;
        append_checked(std::span<event>(&e, 1));
        break;
      }
      case entity_change::event_op::replace:
        if (fields_indexed_) {
          by_type_.remove(target->type, target->seq);
          by_type_.add(c.event.type, target->seq);
        }
        target->type = c.event.type;
        target->payload = c.event.payload;
        target->updated_at = c.event.updated_at;
        note(target->seq);
        break;
      case entity_change::event_op::drop: remove_event(target->seq); break;
    }
    return {};
  }


 private:
  /// The undelivered events of one ordering key, in append order, and where its head is queued.
  struct line {
    seq_deque members;
    int in_flight = 0;
    enum class queue : std::uint8_t { none, ready, waiting } queued = queue::none;
    std::pair<std::int64_t, std::uint64_t> ready_entry{};  // lifecycle::claim_rank of the head, when ready
    std::pair<timestamp, std::uint64_t> waiting_entry{};  // (retry_after, seq) when waiting
  };

  struct ready_head {
    line* of;  // the line it heads
    event* head;
  };

  struct user_state {
    std::unordered_map<std::string, line, transparent_string_hash, std::equal_to<>> lines;
    // Heads claimable now, in claim order, each with its line and itself. Lines are nodes of
    // `lines` and events of `events_`, which keep them in place; a head leaves `ready` before
    // its line or itself is erased.
    std::map<std::pair<std::int64_t, std::uint64_t>, ready_head> ready;
    seq_set ready_by_seq;                                  // the same heads, oldest first
    std::set<std::pair<timestamp, std::uint64_t>> waiting; // failed heads, earliest retry first
    std::array<seq_set, status_count> by_status;
  };

  /// The new-event rules of lifecycle.hpp, with the uniqueness of the id against this state.
  [[nodiscard]] bool acceptable_new(const event& e) const noexcept {
    return lifecycle::acceptable_new(e) && !by_id_.contains(e.id);
  }
  result<void> validate_new(const event& e) const { return lifecycle::validate_new(e, by_id_.contains(e.id)); }

  /// Sequence numbers only grow, so every index takes the new event at its end: the hints
  /// make those inserts O(1) instead of a walk down trees that no longer fit in cache.
  /// `user` and `l` are the event's user and line. Moves `e` in; returns it as stored.
  const event& insert_event(event& e, user_state& user, line& l) {
    e.seq = next_seq_++;
    e.lease = 0;
    const event& stored = events_.put(std::move(e));
    by_id_.insert_or_assign(stored.id, stored.seq);
    index_fields(stored);
    user.by_status[index(status::pending)].insert(stored.seq);
    const bool new_head = l.members.empty();
    l.members.insert(stored.seq);
    // Behind an existing head the new event changes nothing about where the line is queued.
    if (new_head) refresh(user, stored.ordering_key, l);
    note(stored.seq);
    return stored;
  }

  /// Deletes a pending event that no transport has seen.
  void remove_event(std::uint64_t seq) {
    const event& e = events_.at(seq);
    const std::string key = e.ordering_key;
    user_state& user = user_of(e);
    user.by_status[index(e.status)].erase(seq);
    by_id_.erase(e.id);
    unindex_fields(e);
    events_.erase(seq);
    line& l = user.lines.at(key);
    l.members.erase(seq);
    refresh(user, key, l);
    if (journal_) journal_->removed_events.push_back(seq);
  }

  /// The write-back rule of lifecycle.hpp, onto the event's entity if it has one here.
  void write_back(const event& e) {
    if (!lifecycle::writes_back(e)) return;
    entity_index::key key{e.entity_type, e.entity_id};
    entity_record* row = entities_.at(key);
    if (row == nullptr) return;
    lifecycle::write_back(e, *row);
    if (journal_) journal_->entities.push_back(std::move(key));
  }

  /// The query indexes by entity id and by type. They are built by the first query that needs
  /// them, and kept up from then on: a state nobody queries by those fields never pays for them.
  void index_fields(const event& e) {
    if (!fields_indexed_) return;
    by_entity_.add(e.entity_id, e.seq);
    by_type_.add(e.type, e.seq);
  }
  void unindex_fields(const event& e) {
    if (!fields_indexed_) return;
    by_entity_.remove(e.entity_id, e.seq);
    by_type_.remove(e.type, e.seq);
  }
  void index_fields_from_now_on() {
    if (fields_indexed_) return;
    fields_indexed_ = true;
    for (const event& e : events_) index_fields(e);
  }

  void note(std::uint64_t seq) {
    if (journal_) journal_->events.push_back(seq);
  }

  /// Adds an event in any status to every index it belongs in.
  void link(const event& stored) {
    const event& e = events_.put(event(stored));
    by_id_.insert_or_assign(e.id, e.seq);
    index_fields(e);
    user_state& user = user_of(e);
    user.by_status[index(e.status)].insert(e.seq);
    if (e.status == status::completed) completed_.insert(e.completed_at, e.seq);
    if (is_terminal(e.status)) return;
    line& l = user.lines[e.ordering_key];
    l.members.insert(e.seq);
    if (e.status == status::processing) {
      ++l.in_flight;
      leases_.insert(e.lease_until, e.seq);
    }
    refresh(user, e.ordering_key, l);
  }

  /// Removes an event from every index and from the store.
  void unlink(std::uint64_t seq) {
    const event e = events_.at(seq);  // a copy: the stored one goes below
    user_state& user = user_of(e);
    user.by_status[index(e.status)].erase(seq);
    if (e.status == status::completed) completed_.erase(e.completed_at, seq);
    by_id_.erase(e.id);
    unindex_fields(e);
    events_.erase(seq);
    if (is_terminal(e.status)) return;
    line& l = user.lines.at(e.ordering_key);
    if (e.status == status::processing) {
      --l.in_flight;
      leases_.erase(e.lease_until, seq);
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
    user.by_status[index(to)].insert(e.seq);
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

  void enqueue_ready(user_state& user, line& l, event& e) {
    l.ready_entry = lifecycle::claim_rank(e);
    user.ready.emplace(l.ready_entry, ready_head{&l, &e});
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
    event& head = events_.at(l.members.front());
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
      event& e = events_.at(seq);
      line& l = user.lines.at(e.ordering_key);
      enqueue_ready(user, l, e);
    }
  }

  /// Leases that ran out, by lifecycle::lease_expiry.
  void expire_leases(timestamp now) {
    while (!leases_.empty() && leases_.front().first <= now) {
      const auto [lease_until, seq] = leases_.front();
      leases_.erase(lease_until, seq);
      event& e = events_.at(seq);
      user_state& user = user_of(e);
      line& l = user.lines.at(e.ordering_key);
      --l.in_flight;
      e.lease = 0;
      e.lease_until = {};
      e.updated_at = now;
      const lifecycle::expiry expired = lifecycle::lease_expiry(e);
      e.last_error = expired.message;
      move_status(user, e, expired.to);
      if (is_terminal(expired.to)) l.members.erase(seq);
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

  event_store events_;  // by seq: append order
  id_index by_id_;
  std::map<std::string, user_state, std::less<>> users_;
  seqs_by_time<timestamp> leases_;     // seqs by lease_until, all users
  seqs_by_time<timestamp> completed_;  // seqs by completed_at, for purge
  field_index by_entity_;  // seqs by entity id, for queries
  field_index by_type_;    // seqs by type, for queries
  bool fields_indexed_ = false;  // whether by_entity_ and by_type_ are built and kept up
  std::uint64_t next_seq_ = 1;
  std::uint64_t next_lease_ = 1;

  entity_index entities_;
  change_journal* journal_ = nullptr;
};

}  // namespace detail

}  // namespace outbox
