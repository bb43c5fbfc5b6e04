// outbox::file_storage: the conformance suite, plus what files add: reopening, the directory
// lock, permissions, compaction, the record format, large appends. Corruption:
// file_corruption.cpp. Group commit and concurrent writers: tests/concurrency/storages.cpp.
#include <outbox/storage/file.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "support/fixture.hpp"
#include "support/many_events.hpp"
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

// ---- the record writer and checksum ------------------------------------------------------------

TEST_CASE("CRC-32C: the hardware and table versions agree, and give the standard check value", "[storage][file][crc]") {
  CHECK(outbox::detail::crc32c("123456789") == 0xE3069283U);
  CHECK(outbox::detail::crc32c_portable("123456789") == 0xE3069283U);
  CHECK(outbox::detail::crc32c("") == 0U);
  std::string bytes(300, '\0');
  std::uint32_t x = 12345;
  for (auto& c : bytes) c = static_cast<char>((x = x * 1103515245U + 12345U) >> 16);
  // Every length and alignment the 8-, 4- and 1-byte steps can meet, and a continued CRC.
  for (std::size_t offset = 0; offset < 8; ++offset)
    for (std::size_t length = 0; offset + length <= 64; ++length) {
      const std::string_view part(bytes.data() + offset, length);
      REQUIRE(outbox::detail::crc32c(part) == outbox::detail::crc32c_portable(part));
      REQUIRE(outbox::detail::crc32c(part, 0xDEADBEEF) == outbox::detail::crc32c_portable(part, 0xDEADBEEF));
    }
  CHECK(outbox::detail::crc32c(bytes) == outbox::detail::crc32c_portable(bytes));
  CHECK(outbox::detail::crc32c(std::string_view(bytes).substr(100), outbox::detail::crc32c(std::string_view(bytes).substr(0, 100))) ==
        outbox::detail::crc32c(bytes));
}

TEST_CASE("records are written little-endian, sized as measured, and read back", "[storage][file][format]") {
  namespace wire = outbox::detail::log;
  outbox::testing::storage_fixture f;
  outbox::event e = f.make("alice", "k", 7, "t");
  e.seq = 0x0102030405060708ULL;
  e.payload = std::string("\0\xff payload", 10);
  e.attempts = 3;
  std::string out = "prefix";
  wire::put_event(out, e);
  REQUIRE(out.size() == 6 + wire::event_record_size(e));
  // Frame: length, then CRC of the body, then the body: the type byte and the seq, low byte first.
  const std::string_view frame = std::string_view(out).substr(6);
  CHECK(static_cast<unsigned char>(frame[0]) == ((frame.size() - wire::frame_overhead) & 0xFF));
  CHECK(static_cast<unsigned char>(frame[8]) == static_cast<unsigned char>(wire::record_type::event));
  CHECK(static_cast<unsigned char>(frame[9]) == 0x08);
  CHECK(static_cast<unsigned char>(frame[16]) == 0x01);
  std::string_view body;
  REQUIRE(wire::frame_end(frame, 0, &body) == frame.size());
  const auto decoded = wire::decode(body);
  REQUIRE(decoded.has_value());
  const auto& back = std::get<outbox::event>(*decoded);
  CHECK(back.seq == e.seq);
  CHECK(back.id == e.id);
  CHECK(back.payload == e.payload);
  CHECK(back.attempts == 3);
  CHECK(back.priority == 7);

  outbox::entity_record row{.collection = "c", .id = "i", .user_id = "u", .natural_key = "n", .payload = "p",
                            .occurred_at = f.t0, .sync = outbox::sync_status::synced, .remote_id = "r",
                            .sync_error = {}, .last_event = e.id, .version = 2, .created_at = f.t0, .updated_at = f.t0};
  std::string rows;
  wire::put_entity(rows, row);
  CHECK(rows.size() == wire::entity_record_size(row));
}

// ---- large appends: logged first, indexed while the flusher syncs --------------------------------

TEST_CASE("a large append is durable, indexed and replayed exactly as a small one", "[storage][file][overlap]") {
  const auto dir = temp_path("outbox-file-overlap");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  auto big = many(f, "alice", 3 * outbox::file_storage::overlap_min_events, "k");
  auto small = many(f, "alice", 2, "s");
  std::vector<outbox::event> claimed;
  {
    outbox::file_options durable;
    outbox::file_storage s(dir, durable);
    REQUIRE(s.append(std::span<outbox::event>(small)).has_value());
    REQUIRE(s.append(std::span<outbox::event>(big)).has_value());
    // The caller's events got their seqs, in order after the small append's.
    for (std::size_t i = 0; i < big.size(); ++i) CHECK(big[i].seq == small.back().seq + 1 + i);
    // Readable at once, and claimable in append order.
    CHECK(s.find(big.back().id).value().has_value());
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 100, 60s), claimed).value() == 9);  // one head per key
    CHECK(claimed.front().id == small[0].id);
    CHECK(s.disk_usage().syncs >= 3);
  }
  outbox::file_storage s(dir);
  for (const auto& e : big) {
    const auto found = s.find(e.id).value();
    REQUIRE(found.has_value());
    CHECK(found->seq == e.seq);
    CHECK(found->payload == e.payload);
  }
  const auto claimed_back = s.find(claimed.back().id).value().value();
  CHECK(claimed_back.status == status::processing);
  // Sequence numbers continue after the replayed ones.
  auto more = many(f, "alice", outbox::file_storage::overlap_min_events, "m");
  REQUIRE(s.append(std::span<outbox::event>(more)).has_value());
  CHECK(more.front().seq == big.back().seq + 1);
}

TEST_CASE("a large append that is refused logs nothing and changes nothing", "[storage][file][overlap]") {
  const auto dir = temp_path("outbox-file-overlap-refused");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  auto big = many(f, "alice", 2 * outbox::file_storage::overlap_min_events, "k");
  big.back().id = big.front().id;  // the same id twice
  {
    outbox::file_storage s(dir);
    const auto usage = s.disk_usage();
    const auto refused = s.append(std::span<outbox::event>(big));
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == errc::invalid_argument);
    CHECK(s.disk_usage().writes == usage.writes);
    CHECK_FALSE(s.find(big[1].id).value().has_value());
    big.back() = f.make("alice", "other");
    REQUIRE(s.append(std::span<outbox::event>(big)).has_value());
    CHECK(big.front().seq == 1);
  }
  outbox::file_storage s(dir);
  CHECK(s.query({.limit = 1000}).value().size() == big.size());
}
