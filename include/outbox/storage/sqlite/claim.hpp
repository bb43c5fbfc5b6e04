#pragma once
/// \file
/// The claim engine: appending events to their lines, the line heads (`outbox_keys`) that serve
/// claims in claim order without a sort, lease expiry, claims, and recorded outcomes with their
/// write-back onto entities.

#include <sqlite3.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "outbox/detail/lifecycle.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/sqlite/connection.hpp"

namespace outbox::detail::sqlite {

/// Events and their lines: each ordering key with undelivered events has one row in
/// `outbox_keys` describing its head, kept up to date by every change to the line.
struct claim_engine : connection {
  using connection::connection;

  std::uint64_t next_lease = lifecycle::random_lease_start();

  /// What a record needs of an event this connection claimed, by the lease it was claimed under:
  /// its row and line, for an outcome that comes back here (as a processor's do) to update it
  /// by rowid and nothing to read back. A memo, not a truth: the update still requires the
  /// event in flight under that lease, so an entry whose claim was rolled back, expired or
  /// taken over changes nothing, and an outcome without an entry goes the general way.
  struct claimed_event {
    event_id id;
    std::int64_t seq = 0;
    std::string user, key, entity_type, entity_id, last_error;
  };
  std::unordered_map<std::uint64_t, claimed_event> claimed;
  /// Entries left by claims whose outcomes never came back are dropped beyond this many.
  static constexpr std::size_t claimed_limit = 1 << 16;

  result<void> insert_event(event& e, status_tally& tally) {
    // New-event validation (lifecycle.hpp); the id's uniqueness is the table's constraint.
    if (!lifecycle::acceptable_new(e)) return lifecycle::validate_new(e, false);
    {
      auto& s = insert_event_stmt;
      reset_on_exit reset{s};
      s.bind(1, e.id).bind(2, e.type).bind(3, e.entity_id).bind(4, e.entity_type).bind(5, e.ordering_key);
      s.bind(6, e.user_id).bind_blob(7, e.payload).bind(8, e.priority).bind(9, e.max_attempts);
      s.bind(10, e.created_at).bind(11, e.updated_at).bind(12, e.last_error);
      const int rc = s.step();
      if ((rc & 0xFF) == SQLITE_CONSTRAINT)
        return lifecycle::duplicate_id(e.id);
      if (rc != SQLITE_DONE) return failure(db, rc, "appending an event");
    }
    e.seq = static_cast<std::uint64_t>(sqlite3_last_insert_rowid(db));
    e.lease = 0;
    // A key with no line yet gets one headed by this event; behind an existing head nothing moves.
    auto& k = insert_key_if_absent;
    k.bind(1, e.user_id).bind(2, e.ordering_key).bind(3, e.priority).bind(4, e.seq);
    if (auto queued = step_done(k, db, "queueing an ordering key"); !queued) return queued;
    tally.add(e.user_id, status::pending, 1);
    return {};
  }

  /// Why a line is re-derived: its in-flight event left processing, or anything else.
  enum class line_event { flight_ended, other };

  /// Re-derives a line's head after a change to the line's event `changed`.
  ///
  /// The head is the line's undelivered event with the lowest seq. Every undelivered event is
  /// at or after the head the line row records, or is `changed` itself (a reset dead event
  /// rejoining), so the search starts at the lower of the two: it skips no undelivered event and
  /// walks over no delivered one before the old head. In a drain it reads two index entries.
  ///
  /// A line has at most one event in flight: claims take only heads of lines in state 0, and
  /// the claim moves the line to state 2 until that event's outcome is recorded or its lease
  /// expires. So after an outcome or an expiry (`flight_ended`) nothing of the line is in
  /// flight; after any other change (a reset dead event rejoining ahead of an in-flight one, a
  /// dropped or re-bounded event) the line row's own state still says it. (A query over the
  /// line's events for a processing one would be planned on the per-user status index and make
  /// every recorded outcome visit every pending event of the user.)
  ///
  /// One statement (refresh_line_sql) reads the row, finds the head and writes the row in
  /// place. Only when it changes nothing does a line start (insert_line_sql) or end.
  result<void> refresh(std::string_view user, std::string_view key, std::int64_t changed,
                       line_event why = line_event::other) {
    auto& s = refresh_line;
    s.bind(1, user).bind(2, key).bind(3, changed).bind(4, why == line_event::other ? 1 : 0);
    if (auto r = step_done(s, db, "updating a line"); !r) return r;
    if (sqlite3_changes(db) != 0) return {};
    auto& i = insert_line;
    i.bind(1, user).bind(2, key).bind(3, changed);
    if (auto r = step_done(i, db, "starting a line"); !r) return r;
    if (sqlite3_changes(db) != 0) return {};
    delete_key.bind(1, user).bind(2, key);  // no undelivered event left: the line ends
    return step_done(delete_key, db, "dropping an empty line");
  }

  /// The write-back rule (lifecycle::write_back, stated there) in SQL: a delivered or dead
  /// event's outcome is written onto the entity it came from, in the same transaction
  /// (write_back_completed / write_back_dead in statements.hpp).
  result<void> write_back(std::string_view entity_type, std::string_view entity_id, status to,
                          std::string_view remote_id, const event_id& id, std::string_view error_text) {
    if (entity_type.empty()) return {};
    if (to == status::completed) {
      auto& s = write_back_completed;
      s.bind(1, entity_type).bind(2, entity_id).bind(3, remote_id).bind(4, id);
      return step_done(s, db, "writing a delivery back onto its entity");
    }
    if (to == status::dead) {
      auto& s = write_back_dead;
      s.bind(1, entity_type).bind(2, entity_id).bind(3, error_text);
      return step_done(s, db, "writing a rejection back onto its entity");
    }
    return {};
  }

  /// Lease expiry (lifecycle::lease_expiry): an event whose lease ended goes back to pending, or
  /// to dead (written back onto its entity) when the lease ended during its last attempt.
  result<void> expire(timestamp now, status_tally& tally) {
    struct expired {
      std::int64_t seq;
      int attempts, max_attempts;
      std::string user, key, entity_type, entity_id;
    };
    std::vector<expired> list;
    {
      auto& s = expired_leases;
      reset_on_exit reset{s};
      s.bind(1, now);
      int rc;
      while ((rc = s.step()) == SQLITE_ROW)
        list.push_back({s.int64(0), s.integer(1), s.integer(2), s.text(3), s.text(4), s.text(5), s.text(6)});
      if (rc != SQLITE_DONE) return failure(db, rc, "reading expired leases");
    }
    for (const auto& x : list) {
      const lifecycle::expiry expired = lifecycle::lease_expiry(x.attempts, x.max_attempts);
      const std::string why = expired.message;
      expire_one.bind(1, x.seq).bind(2, static_cast<int>(expired.to)).bind(3, now).bind(4, why);
      if (auto d = step_done(expire_one, db, "expiring a lease"); !d) return d;
      if (auto r = refresh(x.user, x.key, x.seq, line_event::flight_ended); !r) return r;
      tally.move(x.user, status::processing, expired.to);
      if (expired.to == status::dead) {
        if (auto w = write_back(x.entity_type, x.entity_id, status::dead, {}, {}, why); !w) return w;
      }
    }
    return {};
  }

  /// The claim order (stated in lifecycle.hpp): expired leases first, due retries promoted, then
  /// ready heads in (priority desc, seq) order (ready_heads_sql), one event per line.
  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    if (request.limit == 0) return std::size_t{0};
    status_tally tally;
    if (auto x = expire(request.now, tally); !x) return x.error();
    promote_due.bind(1, request.user_id).bind(2, request.now);
    if (auto p = step_done(promote_due, db, "promoting due retries"); !p) return p.error();
    std::vector<std::pair<std::int64_t, status>> heads;  // seq, and pending or failed
    {
      auto& s = ready_heads;
      reset_on_exit reset{s};
      s.bind(1, request.user_id).bind(2, static_cast<std::int64_t>(request.limit));
      int rc;
      while ((rc = s.step()) == SQLITE_ROW) heads.emplace_back(s.int64(0), static_cast<status>(s.integer(1)));
      if (rc != SQLITE_DONE) return failure(db, rc, "reading ready heads");
    }
    if (!heads.empty()) {
      block_heads.bind(1, request.user_id).bind(2, static_cast<std::int64_t>(heads.size()));
      if (auto b = step_done(block_heads, db, "marking lines in flight"); !b) return b.error();
    }
    if (claimed.size() + heads.size() > claimed_limit) claimed.clear();
    for (auto [seq, was] : heads) {
      auto& s = claim_one;
      reset_on_exit reset{s};
      s.bind(1, seq).bind(2, next_lease++).bind(3, request.lease_until).bind(4, request.now);
      const int rc = s.step();
      if (rc != SQLITE_ROW) return failure(db, rc, "claiming an event");
      const event& e = out.emplace_back(read_event(s));
      claimed.insert_or_assign(e.lease, claimed_event{e.id, seq, e.user_id, e.ordering_key, e.entity_type, e.entity_id,
                                                      e.last_error});
      tally.move(request.user_id, was, status::processing);
    }
    if (auto c = apply_counts(tally); !c) return c.error();
    return heads.size();
  }

  /// The record precondition (lifecycle::may_record) in SQL: an outcome applies only under the
  /// lease it carries (record_one's WHERE clause); a stale one is skipped, not an error.
  result<std::size_t> record(std::span<outcome> outcomes) {
    if (auto valid = lifecycle::check_outcomes(outcomes); !valid) return valid.error();
    std::size_t applied = 0;
    status_tally tally;
    for (outcome& o : outcomes) {
      o.applied = false;
      std::string user, key, entity_type, entity_id, last_error;
      std::int64_t seq = 0;
      if (auto memo = claimed.find(o.lease); memo != claimed.end() && memo->second.id == o.id) {
        claimed_event c = std::move(memo->second);
        claimed.erase(memo);
        auto& s = record_claimed;
        bind_outcome(s, o).bind(9, c.seq);
        if (auto r = step_done(s, db, "recording an outcome"); !r) return r.error();
        if (sqlite3_changes(db) == 0) continue;  // stale: the lease is gone
        seq = c.seq;
        user = std::move(c.user);
        key = std::move(c.key);
        entity_type = std::move(c.entity_type);
        entity_id = std::move(c.entity_id);
        last_error = o.error.empty() ? std::move(c.last_error) : o.error;
      } else {
        auto& s = record_one;
        reset_on_exit reset{s};
        bind_outcome(s, o);
        const int rc = s.step();
        if (rc == SQLITE_DONE) continue;  // stale: the lease is gone
        if (rc != SQLITE_ROW) return failure(db, rc, "recording an outcome");
        seq = s.int64(0);
        user = s.text(1);
        key = s.text(2);
        entity_type = s.text(3);
        entity_id = s.text(4);
        last_error = s.text(5);
      }
      if (auto r = refresh(user, key, seq, line_event::flight_ended); !r) return r.error();
      if (auto w = write_back(entity_type, entity_id, o.to, o.remote_id, o.id, last_error); !w) return w.error();
      tally.move(user, status::processing, o.to);
      o.applied = true;
      ++applied;
    }
    if (auto c = apply_counts(tally); !c) return c.error();
    return applied;
  }

 private:
  /// The parameters record_one and record_claimed share: the outcome, under its lease.
  static statement& bind_outcome(statement& s, const outcome& o) {
    s.bind(1, o.id).bind(2, o.lease).bind(3, static_cast<int>(o.to)).bind(4, o.attempts).bind(5, o.at);
    return s.bind(6, o.retry_after).bind(7, o.error).bind(8, o.remote_id);
  }
};

}  // namespace outbox::detail::sqlite
