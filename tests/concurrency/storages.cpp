// Group commit in the durable storages, one templated suite for SQLite and the file storage, run
// under ThreadSanitizer by the test command: many threads write at once, share transactions and
// syncs, and each returns only once its own work is durable.
#include <catch2/catch.hpp>

#include <outbox/storage/file.hpp>
#include <outbox/storage/sqlite.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/fixture.hpp"
#include "support/many_events.hpp"
#include "support/temp_file_storage.hpp"
#include "support/temp_sqlite.hpp"

using namespace outbox_test;
using namespace std::chrono_literals;
using outbox::errc;
using outbox::status;

namespace {

/// What the suite needs to know of a storage beyond the concept: how to open it durable, and how
/// many calls it served with how many syncs.
template <class Storage>
struct durable;

template <>
struct durable<temp_sqlite_storage> {
  static temp_sqlite_storage open() { return temp_sqlite_storage(temp_path("outbox-group.db"), outbox::sqlite_options{}); }
  static std::pair<std::uint64_t, std::uint64_t> calls_and_syncs(temp_sqlite_storage& s) {
    const auto c = s.commit_stats();
    return {c.writes, c.commits};
  }
};

template <>
struct durable<temp_file_storage> {
  static temp_file_storage open() { return temp_file_storage(temp_path("outbox-group"), outbox::file_options{}); }
  static std::pair<std::uint64_t, std::uint64_t> calls_and_syncs(temp_file_storage& s) {
    const auto u = s.disk_usage();
    return {u.writes, u.syncs};
  }
};

std::size_t pending_of(auto& storage) {
  return storage.stats(std::nullopt, outbox::timestamp()).value().count(status::pending);
}

}  // namespace

TEMPLATE_TEST_CASE("concurrent writers share syncs, and each is stored when its call returns", "[concurrency][group_commit]",
                   temp_sqlite_storage, temp_file_storage) {
  auto s = durable<TestType>::open();
  constexpr int threads = 8;
  constexpr int per_thread = 100;
  std::vector<std::vector<outbox::event>> made(threads);
  {
    outbox::testing::storage_fixture f;
    for (int t = 0; t < threads; ++t)
      for (int i = 0; i < per_thread; ++i) made[t].push_back(f.make("alice", "k" + std::to_string(t)));
  }
  std::atomic<int> failures{0}, unseen{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t) {
    writers.emplace_back([&, t] {
      for (auto& e : made[t]) {
        failures += !s.append(std::span<outbox::event>(&e, 1)).has_value();
        // Returned means stored: the event is visible to this thread at once.
        auto found = s.find(e.id);
        unseen += !(found && found->has_value());
      }
    });
  }
  for (auto& w : writers) w.join();
  REQUIRE(failures == 0);
  CHECK(unseen == 0);
  const auto [calls, syncs] = durable<TestType>::calls_and_syncs(s);
  CHECK(calls >= threads * per_thread);
  CHECK(syncs < calls);  // some callers shared a sync
  CHECK(pending_of(s) == threads * per_thread);
}

TEMPLATE_TEST_CASE("a writer that fails among concurrent writers loses only its own work", "[concurrency][group_commit]",
                   temp_sqlite_storage, temp_file_storage) {
  // Half the calls re-append an id already stored, and must fail; the others must all be kept.
  // SQLite runs a group's members without savepoints first and re-runs the group with one per
  // member when any fails: a failure must neither take other members' events with it nor leave
  // rows of its own behind.
  auto s = durable<TestType>::open();
  constexpr int threads = 8;
  constexpr int per_thread = 60;
  outbox::testing::storage_fixture f;
  const outbox::event stored = f.make("alice", "stored");
  outbox::event first = stored;  // the storage may move from what it appends
  REQUIRE(s.append(std::span<outbox::event>(&first, 1)));
  std::vector<std::vector<outbox::event>> made(threads);
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < per_thread; ++i) made[t].push_back(i % 2 ? stored : f.make("alice", "k" + std::to_string(t)));
  std::atomic<int> wrong{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        auto r = s.append(std::span<outbox::event>(&made[t][i], 1));
        const bool duplicate = i % 2 != 0;
        if (duplicate ? (r || !(r.error() == errc::invalid_argument)) : !r) ++wrong;
      }
    });
  }
  for (auto& w : writers) w.join();
  CHECK(wrong == 0);
  CHECK(pending_of(s) == 1 + threads * per_thread / 2);
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < per_thread; i += 2) CHECK(s.find(made[t][i].id).value().has_value());
}

TEMPLATE_TEST_CASE("an outbox delivers everything with the runner and many producers", "[concurrency][outbox]",
                   temp_sqlite_storage, temp_file_storage) {
  outbox::options options;
  options.batch_size = 50;
  basic_fixture<TestType> f(options);
  f.box.set_user("alice");
  f.box.start();
  std::vector<std::thread> producers;
  std::atomic<int> refused{0};
  for (int p = 0; p < 4; ++p)
    producers.emplace_back([&, p] {
      for (int i = 0; i < 500; ++i)
        refused += !f.box.enqueue({.type = "t", .entity_id = "p" + std::to_string(p) + "-" + std::to_string(i % 7),
                                   .payload = std::to_string(i)}).has_value();
    });
  for (auto& t : producers) t.join();
  REQUIRE(refused == 0);
  REQUIRE(eventually([&] { return f.box.stats().value().count(status::completed) == 2000; }, 120s));
  f.box.stop();
  CHECK(f.backend.duplicates() == 0);
}

// ---- the file storage's overlapped append: an indexer thread indexes while the appender syncs ---

TEST_CASE("large appends from several threads, claims and compactions between them, replay whole",
          "[concurrency][file][overlap]") {
  const auto dir = temp_path("outbox-file-overlap-threads");
  temp_dir_owner cleanup(dir);
  outbox::file_options options;  // durable group commit
  options.compact_min_dead_bytes = 16 << 10;
  options.compact_dead_ratio = 0.5;
  constexpr int threads = 4;
  constexpr int rounds = 15;
  std::vector<std::vector<std::vector<outbox::event>>> made(threads);
  {
    outbox::testing::storage_fixture f;
    for (int t = 0; t < threads; ++t)
      for (int r = 0; r < rounds; ++r)
        made[t].push_back(many(f, "alice", outbox::file_storage::overlap_min_events + static_cast<std::size_t>(r),
                               "t" + std::to_string(t) + "-"));
  }
  outbox::testing::storage_fixture f;
  std::size_t total = 0;
  std::size_t completed = 0;
  {
    outbox::file_storage s(dir, options);
    std::atomic<int> failures{0};
    std::atomic<bool> done{false};
    std::thread claimer([&] {
      std::vector<outbox::event> claimed;
      while (!done) {
        claimed.clear();
        if (!s.claim(f.claim_at("alice", f.t0, 20, 60s), claimed)) ++failures;
        std::vector<outbox::outcome> outcomes;
        for (const auto& e : claimed) outcomes.push_back(outbox::testing::storage_fixture::complete(e, f.t0));
        if (!outcomes.empty() && !s.record(std::span<outbox::outcome>(outcomes))) ++failures;
        completed += claimed.size();
      }
    });
    std::vector<std::thread> writers;
    for (int t = 0; t < threads; ++t)
      writers.emplace_back([&, t] {
        for (auto& batch : made[t]) {
          failures += !s.append(std::span<outbox::event>(batch)).has_value();
          if (t == 0 && !s.compact()) ++failures;  // between the others' appends: waits for an idle log
        }
      });
    for (auto& w : writers) w.join();
    done = true;
    claimer.join();
    REQUIRE(failures == 0);
    CHECK(s.disk_usage().compactions > 0);
    for (const auto& per_thread : made)
      for (const auto& batch : per_thread) total += batch.size();
    CHECK(s.query({.limit = 10000}).value().size() == total);
  }
  outbox::file_storage s(dir, options);
  // Compaction keeps the accounting it had: afterwards the segment is the live records, the
  // header and the snapshot's two markers, nothing else.
  REQUIRE(s.compact().has_value());
  const auto usage = s.disk_usage();
  CHECK(usage.total_bytes == usage.live_bytes + outbox::detail::log::header_size + 2 * (outbox::detail::log::frame_overhead + 9));
  const auto replayed = s.query({.limit = 10000}).value();
  REQUIRE(replayed.size() == total);
  CHECK(std::is_sorted(replayed.begin(), replayed.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; }));
  CHECK(s.stats(std::nullopt, f.t0).value().count(status::completed) == completed);
  for (const auto& per_thread : made)
    for (const auto& batch : per_thread)
      for (const auto& e : batch) REQUIRE(s.find(e.id).value().has_value());
}

TEST_CASE("a large append's ids are taken from its first moment: a racing duplicate loses, the log stays whole",
          "[concurrency][file][overlap]") {
  const auto dir = temp_path("outbox-file-overlap-race");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  constexpr int rounds = 40;
  int single_won = 0;
  {
    outbox::file_storage s(dir);
    for (int round = 0; round < rounds; ++round) {
      auto batch = many(f, "alice", outbox::file_storage::overlap_min_events, "r" + std::to_string(round) + "-");
      outbox::event rival = batch.back();  // the same id, on a key of its own
      rival.entity_id = rival.ordering_key = "rival-" + std::to_string(round);
      std::atomic<bool> big_done{false};
      bool single_ok = false;
      // Tries until one try wins or the batch is in: some tries land while the indexer still
      // holds the batch, and must find its ids taken all the same.
      std::thread racer([&] {
        while (!big_done.load()) {
          if (s.append(std::span<outbox::event>(&rival, 1))) {
            single_ok = true;
            return;
          }
        }
      });
      const bool big_ok = s.append(std::span<outbox::event>(batch)).has_value();
      big_done = true;
      racer.join();
      REQUIRE(big_ok != single_ok);
      single_won += single_ok ? 1 : 0;
    }
    CHECK(s.query({.limit = 10000}).value().size() ==
          static_cast<std::size_t>(single_won) + static_cast<std::size_t>(rounds - single_won) * outbox::file_storage::overlap_min_events);
  }
  auto reopened = outbox::file_storage::open(dir);  // a log holding one id twice is refused
  REQUIRE(reopened.has_value());
  CHECK(reopened->recovery().notes.empty());
}
