// outbox::file_storage: the conformance suite, plus what files add: reopening, the directory
// lock, permissions, compaction, group commit. Corruption: file_corruption.cpp.
#include <outbox/storage/file.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "support/fixture.hpp"
#include "support/temp_file_storage.hpp"

using namespace outbox_test;
using namespace std::chrono_literals;
using outbox::errc;
using outbox::status;

namespace {
struct file_storage_factory {
  using storage_type = temp_file_storage;
  temp_file_storage make() { return temp_file_storage(); }
};
}  // namespace

OUTBOX_STORAGE_CONFORMANCE_TESTS(file_storage_factory)
OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(file_storage_factory)

TEST_CASE("the whole state survives closing and reopening the directory", "[storage][file]") {
  const auto dir = temp_path("outbox-file-reopen");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("bob", "c")};
  batch[0].payload = std::string("\0\xff binary", 9);
  std::vector<outbox::event> claimed;
  {
    outbox::file_storage s(dir);
    REQUIRE(s.append(std::span<outbox::event>(batch)).has_value());
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 10, 60s), claimed).value() == 2);
    std::vector<outbox::outcome> outcomes = {outbox::testing::storage_fixture::complete(claimed[0], f.t0, "srv-1"),
                                             outbox::testing::storage_fixture::fail(claimed[1], f.t0, f.t0 + 30s)};
    REQUIRE(s.record(std::span<outbox::outcome>(outcomes)).value() == 2);
    outbox::entity_change change;
    change.entity = {.collection = "weight", .id = "w1", .user_id = "bob", .natural_key = "day-1", .payload = "71.4",
                     .occurred_at = f.t0, .sync = outbox::sync_status::pending, .remote_id = {}, .sync_error = {},
                     .last_event = {}, .version = 0, .created_at = f.t0, .updated_at = f.t0};
    change.event = f.make("bob", "weight/w1");
    change.event.entity_type = "weight";
    change.event.entity_id = "w1";
    change.entity.last_event = change.event.id;
    REQUIRE(s.commit(change).has_value());
  }
  outbox::file_storage s(dir);
  CHECK(s.recovery().torn_bytes_truncated == 0);
  const auto a = s.find(batch[0].id).value().value();
  CHECK(a.status == status::completed);
  CHECK(a.remote_id == "srv-1");
  CHECK(a.payload == batch[0].payload);
  const auto b = s.find(batch[1].id).value().value();
  CHECK(b.status == status::failed);
  CHECK(b.retry_after == f.t0 + 30s);
  CHECK(s.find_entity_by_key("weight", "bob", "day-1").value()->payload == "71.4");
  // The retry is claimable on time, and new events continue the sequence.
  std::vector<outbox::event> again;
  CHECK(s.claim(f.claim_at("alice", f.t0 + 30s), again).value() == 1);
  std::vector<outbox::event> more = {f.make("alice", "d")};
  REQUIRE(s.append(std::span<outbox::event>(more)).has_value());
  CHECK(more[0].seq > batch[2].seq);
}

TEST_CASE("one owner at a time: a second opener gets a clear error", "[storage][file]") {
  temp_file_storage first;
  auto second = outbox::file_storage::open(first.directory());
  REQUIRE_FALSE(second.has_value());
  CHECK(second.error() == errc::already_open);
  CHECK_THAT(second.error().message, Catch::Contains(first.directory().string()));
}

TEST_CASE("files are readable and writable by the owner only", "[storage][file]") {
  temp_file_storage s;
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "a")};
  REQUIRE(s.append(std::span<outbox::event>(batch)).has_value());
  struct stat st {};
  REQUIRE(::stat(s.directory().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  for (const auto& entry : std::filesystem::directory_iterator(s.directory())) {
    REQUIRE(::stat(entry.path().c_str(), &st) == 0);
    INFO(entry.path());
    CHECK((st.st_mode & 0777) == 0600);
  }
}

TEST_CASE("disk use stays bounded under steady churn", "[storage][file][compaction]") {
  outbox::file_options options = temp_file_storage::fast();
  options.compact_min_dead_bytes = 64 << 10;
  options.segment_bytes = 256 << 10;
  const auto dir = temp_path("outbox-churn");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  std::uint64_t peak = 0;
  std::size_t live = 0;
  outbox::timestamp now = f.t0;
  {
    outbox::file_storage s(dir, options);
    for (int round = 0; round < 200; ++round) {
      std::vector<outbox::event> batch;
      for (int i = 0; i < 20; ++i) batch.push_back(f.make("alice", "k" + std::to_string(i)));
      REQUIRE(s.append(std::span<outbox::event>(batch)).has_value());
      std::vector<outbox::event> claimed;
      REQUIRE(s.claim(f.claim_at("alice", now, 100), claimed).value() == 20);
      std::vector<outbox::outcome> done;
      for (const auto& e : claimed) done.push_back(outbox::testing::storage_fixture::complete(e, now));
      REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 20);
      now += 1min;
      REQUIRE(s.purge_completed(now - 10min).has_value());  // the app's retention: ten minutes
      peak = std::max(peak, s.disk_usage().total_bytes);
    }
    CHECK(s.disk_usage().compactions > 0);
    live = s.stats(std::nullopt, now).value().total();
  }
  CHECK(live == 200);       // ten minutes of twenty events
  CHECK(peak < 1u << 20);   // 4000 events went through; the files never held much more than the live ones
  outbox::file_storage reopened(dir, options);
  CHECK(reopened.stats(std::nullopt, now).value().total() == live);
}

TEST_CASE("compaction keeps the state across a reopen; leftovers of a crashed compaction are ignored",
          "[storage][file][compaction]") {
  const auto dir = temp_path("outbox-compact");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "a"), f.make("alice", "b")};
  {
    outbox::file_storage s(dir);
    REQUIRE(s.append(std::span<outbox::event>(batch)).has_value());
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 1), claimed).value() == 1);
    std::vector<outbox::outcome> done = {outbox::testing::storage_fixture::complete(claimed[0], f.t0, "r1")};
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 1);
    REQUIRE(s.compact().has_value());
    CHECK(s.disk_usage().segments == 1);
  }
  // A compaction that died before its rename leaves a .tmp: it must not count.
  {
    std::ofstream junk(dir / "segment-0000000099.log.tmp", std::ios::binary);
    junk << "half a snapshot";
  }
  outbox::file_storage s(dir);
  CHECK_FALSE(std::filesystem::exists(dir / "segment-0000000099.log.tmp"));
  CHECK(s.find(batch[0].id).value()->remote_id == "r1");
  CHECK(s.find(batch[1].id).value()->status == status::pending);
}

TEST_CASE("concurrent writers share syncs and each is durable when it returns", "[storage][file][group_commit]") {
  outbox::file_options durable;  // group commit with fdatasync: the default
  temp_file_storage s(temp_path("outbox-file-group"), durable);
  constexpr int threads = 8;
  constexpr int per_thread = 100;
  std::vector<std::vector<outbox::event>> made(threads);
  {
    outbox::testing::storage_fixture f;
    for (int t = 0; t < threads; ++t)
      for (int i = 0; i < per_thread; ++i) made[t].push_back(f.make("alice", "k" + std::to_string(t)));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t)
    writers.emplace_back([&, t] {
      for (auto& e : made[t]) failures += !s.append(std::span<outbox::event>(&e, 1)).has_value();
    });
  for (auto& w : writers) w.join();
  REQUIRE(failures == 0);
  const auto usage = s.disk_usage();
  CHECK(usage.writes == threads * per_thread);
  CHECK(usage.syncs < usage.writes);  // some callers shared a sync
}

TEST_CASE("an outbox on the file storage delivers with the runner and many producers", "[storage][file][outbox]") {
  outbox::options options;
  options.batch_size = 50;
  basic_fixture<temp_file_storage> f(options);
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
  REQUIRE(eventually([&] { return f.box.stats().value().count(status::completed) == 2000; }, 60s));
  f.box.stop();
  CHECK(f.backend.duplicates() == 0);
}
