#pragma once
/// \file
/// The stats cache: how many events each user has waiting in each status, counted once and then
/// moved by this connection's own commits; and the tally a write keeps of its status changes.

#include <sqlite3.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/sqlite/handle.hpp"
#include "outbox/storage/sqlite/statements.hpp"

namespace outbox::detail::sqlite {

/// The status changes of one write, per (user, status). A write usually touches one user and
/// two or three statuses, so a short list beats a map.
struct status_tally {
  struct entry {
    std::string user;
    int status;
    std::int64_t delta;
  };
  std::vector<entry> deltas;
  void add(std::string_view user, status st, std::int64_t n) {
    const int code = static_cast<int>(st);
    for (auto& d : deltas) {
      if (d.status == code && d.user == user) {
        d.delta += n;
        return;
      }
    }
    deltas.push_back({std::string(user), code, n});
  }
  void move(std::string_view user, status from, status to) {
    add(user, from, -1);
    add(user, to, 1);
  }
};

using counts_by_user = std::map<std::string, std::array<std::int64_t, status_count>, std::less<>>;

/// How many events each user has in the statuses an event leaves (pending, processing, failed,
/// dead), as committed. Counting them costs what is waiting, so stats() counts them once and
/// this connection's commits keep the counts: each write tallies its status changes, and the
/// group that commits it adds them here (a memory write, where a table of counts would add a
/// page to every commit's WAL). The counts go stale, and stats() counts again, when another
/// connection commits (PRAGMA data_version) or a write joins an application's transaction, whose
/// end is the application's. Completed events are counted in outbox_completed instead: they are
/// the history, too many to count again.
struct waiting_counts {
  bool valid = false;
  std::int64_t data_version = 0;
  counts_by_user by_user;
  void apply(const status_tally& tally) {
    for (const auto& d : tally.deltas) {
      if (d.status == static_cast<int>(status::completed)) continue;
      by_user[d.user][static_cast<std::size_t>(d.status)] += d.delta;
    }
  }

  /// Counts the waiting statuses per user, from the events (through the status index).
  static result<void> count_into(sqlite3* db, statements& st, counts_by_user& out) {
    out.clear();
    auto& s = st.count_waiting;
    reset_on_exit reset{s};
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) {
      const int code = s.integer(0);
      if (code >= 0 && code < static_cast<int>(status_count))
        out[s.text(1)][static_cast<std::size_t>(code)] = s.int64(2);
    }
    if (rc != SQLITE_DONE) return failure(db, rc, "counting events");
    return {};
  }

  /// The counts stats() can use: the kept ones, counted again first if they are stale. Inside a
  /// transaction of this connection (a transaction_guard) its uncommitted changes are visible,
  /// and the kept counts do not hold them: counted into `scratch` instead.
  result<const counts_by_user*> current(sqlite3* db, statements& st, counts_by_user& scratch) {
    if (sqlite3_get_autocommit(db) == 0) {
      if (auto c = count_into(db, st, scratch); !c) return c.error();
      return &scratch;
    }
    std::int64_t version = 0;
    {
      reset_on_exit reset{st.data_version};
      const int rc = st.data_version.step();
      if (rc != SQLITE_ROW) return failure(db, rc, "reading the data version");
      version = st.data_version.int64(0);
    }
    if (!valid || data_version != version) {
      valid = false;
      if (auto c = count_into(db, st, by_user); !c) return c.error();
      valid = true;
      data_version = version;
    }
    return &by_user;
  }
};

}  // namespace outbox::detail::sqlite
