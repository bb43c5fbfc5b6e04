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
/// of `leases`. No operation on the delivery path walks all events.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox {

namespace detail {

struct transparent_string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// The whole state of a memory storage; not synchronised (memory_storage locks around it).
class memory_state {
 public:
  result<void> append(std::span<event> events) {
    std::unordered_set<event_id> fresh;
    for (const event& e : events) {
      if (e.id.is_nil()) return error(errc::invalid_argument, "event id must not be nil");
      if (e.status != status::pending)
        return error(errc::invalid_argument, "a new event must be pending, got " + std::string(to_string(e.status)));
      if (by_id_.contains(e.id) || !fresh.insert(e.id).second)
        return error(errc::invalid_argument, "duplicate event id " + e.id.to_string());
    }
    for (event& e : events) {
      e.seq = next_seq_++;
      e.lease = 0;
      auto [it, inserted] = events_.emplace(e.seq, e);
      by_id_.emplace(e.id, e.seq);
      user_state& user = user_of(it->second);
      user.by_status[index(status::pending)].insert(e.seq);
      line& l = user.lines[it->second.ordering_key];
      l.members.insert(e.seq);
      refresh(user, it->second.ordering_key, l);
    }
    return {};
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
      auto found = by_id_.find(o.id);
      if (found == by_id_.end()) continue;
      event& e = events_.at(found->second);
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
          completed_.emplace(o.at, e.seq);
          break;
        case status::failed: e.retry_after = o.retry_after; break;
        case status::pending:
        case status::dead:
        case status::processing: break;
      }
      move_status(user, e, o.to);
      if (is_terminal(o.to)) l.members.erase(e.seq);
      refresh(user, e.ordering_key, l);
      o.applied = true;
      ++applied;
    }
    return applied;
  }

  [[nodiscard]] std::optional<event> find(event_id id) const {
    auto found = by_id_.find(id);
    if (found == by_id_.end()) return std::nullopt;
    return events_.at(found->second);
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

  [[nodiscard]] event_stats stats(std::optional<std::string_view> user_filter, timestamp now) {
    expire_leases(now);
    event_stats stats;
    std::optional<timestamp> oldest_pending;
    std::optional<timestamp> oldest_due;
    auto earliest = [](std::optional<timestamp>& slot, timestamp t) {
      if (!slot || t < *slot) slot = t;
    };
    for (auto& [name, user] : users_) {
      if (user_filter && name != *user_filter) continue;
      for (std::size_t s = 0; s < status_count; ++s) stats.counts[s] += user.by_status[s].size();
      const auto& pending = user.by_status[index(status::pending)];
      if (!pending.empty()) earliest(oldest_pending, events_.at(*pending.begin()).created_at);
      promote_due(user, now);
      if (!user.ready_by_seq.empty()) earliest(oldest_due, events_.at(*user.ready_by_seq.begin()).created_at);
    }
    if (oldest_pending) stats.oldest_pending_age = now - *oldest_pending;
    if (oldest_due) stats.oldest_due_age = now - *oldest_due;
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
      auto found = by_id_.find(id);
      if (found != by_id_.end() && reset_one(events_.at(found->second), now)) ++count;
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
      ++count;
    }
    return count;
  }

 private:
  /// The undelivered events of one ordering key, in append order, and where its head is queued.
  struct line {
    std::set<std::uint64_t> members;
    int in_flight = 0;
    enum class queue : std::uint8_t { none, ready, waiting } queued = queue::none;
    std::pair<int, std::uint64_t> ready_entry{};          // (-priority, seq) when ready
    std::pair<timestamp, std::uint64_t> waiting_entry{};  // (retry_after, seq) when waiting
  };

  struct user_state {
    std::unordered_map<std::string, line, transparent_string_hash, std::equal_to<>> lines;
    std::set<std::pair<int, std::uint64_t>> ready;         // heads claimable now
    std::set<std::uint64_t> ready_by_seq;                  // the same heads, oldest first
    std::set<std::pair<timestamp, std::uint64_t>> waiting; // failed heads, earliest retry first
    std::array<std::set<std::uint64_t>, status_count> by_status;
  };

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

  void enqueue_ready(user_state& user, line& l, const event& e) {
    l.ready_entry = {-e.priority, e.seq};
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
    const event& head = events_.at(*l.members.begin());
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
    return true;
  }

  std::map<std::uint64_t, event> events_;  // by seq: append order
  std::unordered_map<event_id, std::uint64_t> by_id_;
  std::map<std::string, user_state, std::less<>> users_;
  std::set<std::pair<timestamp, std::uint64_t>> leases_;     // (lease_until, seq), all users
  std::set<std::pair<timestamp, std::uint64_t>> completed_;  // (completed_at, seq), for purge
  std::uint64_t next_seq_ = 1;
  std::uint64_t next_lease_ = 1;
};

}  // namespace detail

/// A thread-safe, in-memory `outbox::storage`. Movable; every operation takes one mutex.
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

};

}  // namespace outbox
