#pragma once
/// \file
/// The operator's writes on events: resetting failed and dead events, purging completed ones,
/// re-bounding schedules after a clock jump. Each keeps the lines and the counts in step.

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/sqlite/claim.hpp"

namespace outbox::detail::sqlite {

struct event_maintenance : claim_engine {
  using claim_engine::claim_engine;

  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    std::size_t count = 0;
    status_tally tally;
    for (const auto& id : ids) {
      std::string user, key;
      std::int64_t seq = 0;
      status was = status::failed;  // what the event leaves: failed or dead
      {
        auto& s = find_seq;
        reset_on_exit reset_guard{s};
        s.bind(1, id);
        const int rc = s.step();
        if (rc == SQLITE_DONE) continue;
        if (rc != SQLITE_ROW) return failure(db, rc, "reading an event to reset");
        was = static_cast<status>(s.integer(1));
      }
      {
        auto& s = reset_one;
        reset_on_exit reset_guard{s};
        s.bind(1, id).bind(2, now);
        const int rc = s.step();
        if (rc == SQLITE_DONE) continue;
        if (rc != SQLITE_ROW) return failure(db, rc, "resetting an event");
        user = s.text(0);
        key = s.text(1);
        seq = s.int64(2);
      }
      if (auto r = refresh(user, key, seq); !r) return r.error();
      tally.move(user, was, status::pending);
      ++count;
    }
    if (auto c = apply_counts(tally); !c) return c.error();
    return count;
  }

  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    std::vector<event_id> ids;
    {
      auto& s = user ? dead_of_user : dead_all;
      reset_on_exit reset_guard{s};
      if (user) s.bind(1, *user);
      int rc;
      while ((rc = s.step()) == SQLITE_ROW) ids.push_back(s.id(0));
      if (rc != SQLITE_DONE) return failure(db, rc, "listing dead events");
    }
    return reset(ids, now);
  }

  result<std::size_t> purge_completed(timestamp before) {
    // Counted per user first (the deletion's own range, through the status index), so the
    // completed counts drop by what the deletion removes; RETURNING would buffer every row.
    status_tally tally;
    {
      reset_on_exit reset{purge_counts};
      purge_counts.bind(1, before);
      int rc;
      while ((rc = purge_counts.step()) == SQLITE_ROW)
        tally.add(purge_counts.text(0), status::completed, -purge_counts.int64(1));
      if (rc != SQLITE_DONE) return failure(db, rc, "counting completed events to purge");
    }
    purge.bind(1, before);
    if (auto d = step_done(purge, db, "purging completed events"); !d) return d.error();
    const auto purged = static_cast<std::size_t>(sqlite3_changes(db));
    if (auto c = apply_counts(tally); !c) return c.error();
    return purged;
  }

  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    struct late {
      std::int64_t seq;
      std::string user, key;
    };
    std::vector<late> list;
    {
      auto& s = late_retries;
      reset_on_exit reset_guard{s};
      s.bind(1, retry_limit);
      int rc;
      while ((rc = s.step()) == SQLITE_ROW) list.push_back({s.int64(0), s.text(1), s.text(2)});
      if (rc != SQLITE_DONE) return failure(db, rc, "finding late retries");
    }
    for (const auto& x : list) {
      clamp_retry.bind(1, x.seq).bind(2, retry_limit);
      if (auto d = step_done(clamp_retry, db, "re-bounding a retry"); !d) return d.error();
      if (auto r = refresh(x.user, x.key, x.seq); !r) return r.error();
    }
    clamp_leases.bind(1, lease_limit);
    if (auto d = step_done(clamp_leases, db, "re-bounding leases"); !d) return d.error();
    return list.size() + static_cast<std::size_t>(sqlite3_changes(db));
  }
};

}  // namespace outbox::detail::sqlite
