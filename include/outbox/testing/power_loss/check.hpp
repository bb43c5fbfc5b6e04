#pragma once
/// \file
/// The power-loss simulator's check (testing/power_loss.hpp): a workload on a storage opened over
/// a recorder, cut at random points, each state reopened and compared with what was acknowledged.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>

#include <outbox/outbox.hpp>  // the single header provides it too, and file_io.hpp's posix_io
#if __has_include(<outbox/detail/file_io.hpp>)
#include <outbox/detail/file_io.hpp>
#endif

#include <outbox/testing/power_loss/recorder.hpp>

namespace outbox::testing::power_loss {

// ---- the check ---------------------------------------------------------------------------------

/// How `check` runs.
struct check_options {
  std::size_t operations = 150;  ///< calls of the workload (the open is one more)
  std::size_t cuts = 100;        ///< power cuts at random points of its trace (and one after each call)
  std::uint64_t seed = 1;
  /// true: every acknowledged call survives (a storage that syncs each commit). false: a cut
  /// may lose the calls acknowledged after the last file sync before it, but the state must
  /// still be one the calls passed through (a storage that syncs at checkpoints only).
  bool acknowledged_is_durable = true;
  std::string collection = "steps";
};

/// What `check` found.
struct check_report {
  std::size_t operations = 0;  ///< acknowledged calls, the open included
  std::size_t trace_calls = 0;
  std::size_t cuts = 0;  ///< all of them: after each call, and at random points
  std::size_t random_cuts = 0;
  std::size_t recovery_cuts = 0;  ///< of them, cuts followed by a second one during recovery
  std::size_t failed_cuts = 0;
  std::size_t lost_acknowledged = 0;  ///< cuts that lost an acknowledged save or outcome
  std::vector<std::string> problems;  ///< the first few, each naming its cut
  [[nodiscard]] bool ok() const noexcept { return failed_cuts == 0 && operations > 0; }
};

namespace detail_check {

inline std::string describe(const event& e) {
  std::ostringstream out;
  auto t = [](timestamp at) { return std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count(); };
  out << e.id.to_string() << " seq=" << e.seq << " " << to_string(e.status) << " attempts=" << e.attempts << "/"
      << e.max_attempts << " type=" << e.type << " entity=" << e.entity_type << "/" << e.entity_id << " key=" << e.ordering_key
      << " user=" << e.user_id << " prio=" << e.priority << " payload=" << e.payload << " created=" << t(e.created_at)
      << " updated=" << t(e.updated_at) << " retry=" << t(e.retry_after) << " completed=" << t(e.completed_at)
      << " error=" << e.last_error << " remote=" << e.remote_id << " lease=" << e.lease << " until=" << t(e.lease_until);
  return out.str();
}
inline std::string describe(const entity_record& r) {
  std::ostringstream out;
  auto t = [](timestamp at) { return std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count(); };
  out << "v" << r.version << " user=" << r.user_id << " key=" << r.natural_key << " payload=" << r.payload
      << " occurred=" << t(r.occurred_at) << " sync=" << to_string(r.sync) << " remote=" << r.remote_id
      << " error=" << r.sync_error << " last=" << r.last_event.to_string() << " created=" << t(r.created_at)
      << " updated=" << t(r.updated_at);
  return out.str();
}

/// A storage's whole state, as its reads return it.
struct snapshot {
  std::map<std::string, std::string> events;    // id -> description
  std::map<std::string, status> statuses;       // id -> status
  std::map<std::string, std::string> entities;  // id -> description
  std::map<std::string, std::string> last_events;  // entity id -> its last event's id
  bool operator==(const snapshot& other) const { return events == other.events && entities == other.entities; }
};

/// A save of `row` (new when its version is 0) by alice, with its event, as a repository makes it.
inline entity_change save(entity_record row, event_id id, timestamp now, std::string payload) {
  entity_change c;
  const bool update = row.version != 0;
  c.expected_version = row.version;
  c.entity = std::move(row);
  c.entity.user_id = "alice";
  if (!update) c.entity.occurred_at = c.entity.created_at = now;
  c.entity.updated_at = now;
  c.entity.payload = std::move(payload);
  c.event.id = id;
  c.event.type = c.entity.collection + (update ? ".updated" : ".created");
  c.event.entity_type = c.entity.collection;
  c.event.entity_id = c.entity.id;
  c.event.ordering_key = c.entity.collection + "/" + c.entity.id;
  c.event.user_id = "alice";
  c.event.payload = c.entity.payload;
  c.event.max_attempts = 3;
  c.event.created_at = now;
  c.event.updated_at = now;
  c.entity.last_event = c.event.id;
  return c;
}

template <class Storage>
result<snapshot> read_all(Storage& s, const std::string& collection) {
  snapshot out;
  event_query q;
  q.limit = 1'000'000;
  auto events = s.query(q);
  if (!events) return events.error();
  for (const event& e : *events) {
    out.events[e.id.to_string()] = describe(e);
    out.statuses[e.id.to_string()] = e.status;
  }
  entity_query eq;
  eq.collection = collection;
  eq.limit = 1'000'000;
  auto rows = s.query_entities(eq);
  if (!rows) return rows.error();
  for (const entity_record& r : *rows) {
    out.entities[r.id] = describe(r);
    out.last_events[r.id] = r.last_event.to_string();
  }
  return out;
}

}  // namespace detail_check

/// Runs the workload on the storage `open_recording(dir, rec)` opens over a recorder of `dir`,
/// then reopens `reopen(cut_dir)` from `options.cuts` states a power cut could leave and checks
/// each against the states the acknowledged calls passed through. `compact(storage)` is the
/// storage's maintenance (a compaction, a checkpoint). `work` is emptied and used throughout.
template <class OpenRecording, class Reopen, class Compact>
check_report check(const std::filesystem::path& work, OpenRecording open_recording, Reopen reopen, Compact compact,
                   const check_options& options = {}, std::function<void(recorder&)> before = {}) {
  using detail_check::snapshot;
  check_report report;
  std::filesystem::remove_all(work);
  const auto live = work / "live";
  std::filesystem::create_directories(live);
  recorder rec(live);
  if (before) before(rec);
  std::mt19937_64 random(options.seed);
  auto problem = [&](std::string text) {
    if (report.problems.size() < 8) report.problems.push_back(std::move(text));
  };

  // ---- the workload: states[j] is the state once call j (0: the open) was acknowledged
  std::vector<snapshot> states;
  std::vector<std::size_t> started, acknowledged;
  {
    started.push_back(rec.size());
    auto storage = open_recording(live, rec);
    if (!storage) {
      problem("opening the recorded storage failed: " + storage.error().message);
      return report;
    }
    // Keeps the state once a call was acknowledged; false if it cannot be read.
    auto keep_state = [&](auto& opened) {
      acknowledged.push_back(rec.size());
      auto now_state = detail_check::read_all(opened, options.collection);
      if (!now_state) problem("reading failed: " + now_state.error().message);
      else states.push_back(*now_state);
      return now_state.has_value();
    };
    if (!keep_state(*storage)) return report;

    const timestamp t0 = timestamp(std::chrono::seconds(1767225600));
    event_id_generator ids{options.seed};
    std::vector<event> claimed;
    std::vector<entity_record> rows;
    for (std::size_t i = 0; i < options.operations; ++i) {
      const timestamp now = t0 + std::chrono::seconds(static_cast<long long>(i));
      const auto dice = random() % 100;
      started.push_back(rec.size());
      std::string failed;
      if (dice < 45 || rows.empty()) {  // a save: a new entity, or the next version of one
        const bool update = dice % 3 == 0 && !rows.empty();
        entity_record row;
        if (update) {
          row = rows[static_cast<std::size_t>(random() % rows.size())];
        } else {
          row.collection = options.collection;
          row.id = "e" + std::to_string(i);
          row.natural_key = "alice/" + std::to_string(i);
        }
        const entity_change c = detail_check::save(std::move(row), ids.next(now), now, R"({"v":)" + std::to_string(i) + "}");
        if (auto done = storage->commit(c); !done) failed = "save: " + done.error().message;
      } else if (dice < 65) {
        std::vector<event> out;
        auto done = storage->claim(claim_request{"alice", now, now + std::chrono::seconds(30), 1 + random() % 4}, out);
        if (!done) failed = "claim: " + done.error().message;
        claimed.insert(claimed.end(), out.begin(), out.end());
      } else if (dice < 88) {
        std::vector<outcome> outcomes;
        const std::size_t n = std::min<std::size_t>(claimed.size(), 1 + random() % 3);
        for (std::size_t k = 0; k < n; ++k) {
          const event& e = claimed[k];
          const auto answer = random() % 10;
          if (answer < 6)
            outcomes.push_back(outbox::detail::lifecycle::delivered(e, now, "remote-" + e.id.to_string()));
          else
            outcomes.push_back(outbox::detail::lifecycle::failed(e, now, "503", answer == 9, now + std::chrono::seconds(5)));
        }
        claimed.erase(claimed.begin(), claimed.begin() + static_cast<std::ptrdiff_t>(n));
        if (auto done = storage->record(std::span<outcome>(outcomes)); !done) failed = "record: " + done.error().message;
      } else if (dice < 94) {
        if (auto done = storage->purge_completed(now - std::chrono::seconds(10)); !done) failed = "purge: " + done.error().message;
      } else {
        if (auto done = compact(*storage); !done) failed = "compaction: " + done.error().message;
      }
      if (!failed.empty()) {
        problem("the recorded workload's call " + std::to_string(i + 1) + " failed: " + failed);
        return report;
      }
      if (!keep_state(*storage)) return report;
      // The rows as stored now, for the next updates.
      rows.clear();
      entity_query eq;
      eq.collection = options.collection;
      eq.limit = 1'000'000;
      if (auto all = storage->query_entities(eq)) rows = *all;
    }
  }
  report.operations = states.size();
  report.trace_calls = rec.size();

  // ---- the cuts
  // Right after each acknowledgement with nothing unsynced kept: where a missing sync shows.
  // Then `options.cuts` random points.
  std::vector<std::pair<std::size_t, persistence>> cuts;
  for (std::size_t j = 0; j < acknowledged.size(); ++j)
    if (j == 0 || acknowledged[j] != acknowledged[j - 1]) cuts.emplace_back(acknowledged[j], persistence::none);
  for (std::size_t n = 0; n < options.cuts; ++n)
    cuts.emplace_back(static_cast<std::size_t>(random() % (report.trace_calls + 1)),
                      n % 4 == 0 ? persistence::none : n % 4 == 1 ? persistence::all : persistence::chosen);
  report.random_cuts = options.cuts;
  const snapshot empty;
  for (std::size_t n = 0; n < cuts.size(); ++n) {
    const auto [cut, keep] = cuts[n];
    const std::string where = "cut " + std::to_string(n) + " at call " + std::to_string(cut) + "/" +
                              std::to_string(report.trace_calls) + " (" + std::string(to_string(keep)) + ")";
    ++report.cuts;
    // The calls acknowledged before the cut, and the one in flight at it.
    std::ptrdiff_t acked = -1, last_started = -1;
    const std::size_t durable_mark = options.acknowledged_is_durable ? cut : rec.last_sync_before(cut);
    std::ptrdiff_t floor = -1;
    for (std::size_t j = 0; j < states.size(); ++j) {
      if (acknowledged[j] <= cut) acked = static_cast<std::ptrdiff_t>(j);
      if (acknowledged[j] <= durable_mark) floor = static_cast<std::ptrdiff_t>(j);
      if (started[j] < cut || acknowledged[j] <= cut) last_started = static_cast<std::ptrdiff_t>(j);
    }
    const std::ptrdiff_t lowest = options.acknowledged_is_durable ? acked : floor;
    auto state_of = [&](std::ptrdiff_t j) -> const snapshot& { return j < 0 ? empty : states[static_cast<std::size_t>(j)]; };

    // What is wrong with a reopened storage's state, if anything: a loss first, then
    // disagreement, then any other difference from the states the calls passed through.
    auto judge = [&](auto& reopened) -> std::string {
      auto found = detail_check::read_all(reopened, options.collection);
      if (!found) return "reading the reopened storage failed: " + found.error().message;
      for (std::ptrdiff_t j = lowest; j <= last_started; ++j)
        if (*found == state_of(j)) return {};
      const snapshot& floor_state = state_of(lowest);
      const snapshot& newest = state_of(last_started);
      for (const auto& [id, status_then] : floor_state.statuses) {
        if (!newest.statuses.count(id)) continue;  // purged by the call in flight
        auto now = found->statuses.find(id);
        if (now == found->statuses.end()) {
          ++report.lost_acknowledged;
          return "lost acknowledged event " + id;
        }
        if (status_then == status::completed && now->second != status::completed) {
          ++report.lost_acknowledged;
          return "acknowledged completion of " + id + " went back to " + std::string(to_string(now->second));
        }
      }
      for (const auto& [entity, last] : found->last_events)
        if (!found->events.count(last) && floor_state.events.count(last))
          return "entity " + entity + " names event " + last + ", which is missing";
      return "the state is none of those the calls " + std::to_string(lowest) + ".." + std::to_string(last_started) +
             " left (" + std::to_string(found->events.size()) + " events, " + std::to_string(found->entities.size()) +
             " entities)";
    };

    const disk_state crashed = rec.state_at(cut, keep, random);
    const auto dir = work / "cut";
    recorder::write(crashed, dir);
    std::string failure;
    {
      auto reopened = reopen(dir);
      if (!reopened) {
        failure = "opening failed on a state a file system may leave: " + reopened.error().message;
      } else {
        failure = judge(*reopened);
        if (failure.empty()) {  // it must take writes again
          entity_record row;
          row.collection = options.collection;
          row.id = "after-cut";
          const timestamp later = timestamp(std::chrono::seconds(2082758400));  // after the workload's times
          const entity_change c = detail_check::save(std::move(row), event_id_generator{n + 1}.next(later), later, "{}");
          if (auto done = reopened->commit(c); !done) failure = "a save after reopening failed: " + done.error().message;
        }
      }
    }
    // Every 4th cut, the power goes again while the storage recovers from it (opens, closes).
    if (failure.empty() && n % 4 == 3) {
      ++report.recovery_cuts;
      const auto again = work / "recovering";
      recorder::write(crashed, again);
      recorder during(again);
      {
        auto recovering = open_recording(again, during);
        if (!recovering) failure = "opening failed on a state a file system may leave: " + recovering.error().message;
      }
      if (failure.empty()) {
        const auto second = static_cast<std::size_t>(random() % (during.size() + 1));
        recorder::write(during.state_at(second, persistence::chosen, random), again);
        auto reopened = reopen(again);
        failure = reopened ? judge(*reopened) : "opening failed: " + reopened.error().message;
        if (!failure.empty())
          failure = "after a second cut, at call " + std::to_string(second) + "/" + std::to_string(during.size()) +
                    " of the recovery: " + failure;
      }
    }
    if (!failure.empty()) {
      ++report.failed_cuts;
      problem(where + ": " + failure);
    }
  }
  std::filesystem::remove_all(work);
  return report;
}

}  // namespace outbox::testing::power_loss

