// outbox::file_storage: the conformance suite, plus what files add: reopening, the directory
// lock, permissions, compaction, the record format, large appends. Corruption:
// file_corruption.cpp. Group commit and concurrent writers: tests/concurrency/storages.cpp.
#include <outbox/storage/file.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <optional>
#include <thread>

#include "support/fixture.hpp"
#include "support/many_events.hpp"
#include "support/small_filesystem.hpp"
#include "support/stats_shape.hpp"
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

/// Lowers this process's file size limit (RLIMIT_FSIZE) while it lives: the kernel then writes
/// up to the limit and refuses the rest with EFBIG, a real write failure on a real file. SIGXFSZ,
/// which would kill the process, is ignored meanwhile.
class file_size_limit {
 public:
  explicit file_size_limit(std::uint64_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    REQUIRE((saved_.rlim_max == RLIM_INFINITY || saved_.rlim_max >= bytes));
    handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = static_cast<rlim_t>(bytes);
    set_ = ::setrlimit(RLIMIT_FSIZE, &lowered) == 0;
    if (!set_) std::signal(SIGXFSZ, handler_);
    REQUIRE(set_);
  }
  file_size_limit(const file_size_limit&) = delete;
  file_size_limit& operator=(const file_size_limit&) = delete;
  ~file_size_limit() {
    if (!set_) return;
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, handler_);
  }

 private:
  rlimit saved_{};
  void (*handler_)(int) = SIG_DFL;
  bool set_ = false;
};

std::filesystem::path only_segment(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> logs;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".log") logs.push_back(entry.path());
  REQUIRE(logs.size() == 1);
  return logs.front();
}
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
    REQUIRE(outbox::testing::append_keeping(s, batch).has_value());
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
  REQUIRE(outbox::testing::append_keeping(s, more).has_value());
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
  REQUIRE(outbox::testing::append_keeping(s, batch).has_value());
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
      REQUIRE(outbox::testing::append_keeping(s, batch).has_value());
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
    REQUIRE(outbox::testing::append_keeping(s, batch).has_value());
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

TEST_CASE("completed events read back at open stay queryable, purgeable and unique without the index",
          "[storage][file][archive]") {
  // Opening leaves completed events out of the index (detail/completed_archive.hpp): every
  // read must still see them, as before the reopen.
  const auto dir = temp_path("outbox-archive");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "a"), f.make("bob", "b"), f.make("alice", "c"),
                                      f.make("alice", "d")};
  auto deliver = [&](outbox::file_storage& s, const std::string& user, outbox::timestamp at) {
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at(user, at, 10), claimed).has_value());
    std::vector<outbox::outcome> done;
    for (const auto& e : claimed) done.push_back(outbox::testing::storage_fixture::complete(e, at, "r-" + e.entity_id));
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == done.size());
  };
  {
    outbox::file_storage s(dir);
    std::vector<outbox::event> early = {batch[0], batch[1]}, late = {batch[2], batch[3]};
    REQUIRE(outbox::testing::append_keeping(s, early).has_value());
    deliver(s, "alice", f.t0);
    deliver(s, "bob", f.t0 + 10s);
    REQUIRE(outbox::testing::append_keeping(s, late).has_value());
    batch = {early[0], early[1], late[0], late[1]};
  }
  auto check_reads = [&](outbox::file_storage& s) {
    CHECK(s.find(batch[0].id).value()->remote_id == "r-a");
    CHECK(s.find(batch[1].id).value()->status == status::completed);
    const auto all = s.query({}).value();
    REQUIRE(all.size() == 4);
    for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].id == batch[i].id);  // seq order, archive merged
    const auto alice_done = s.query({.status_is = status::completed, .user_id = "alice"}).value();
    REQUIRE(alice_done.size() == 1);
    CHECK(alice_done[0].id == batch[0].id);
    CHECK(s.query({.status_is = status::pending}).value().size() == 2);
    const auto paged = s.query({.limit = 2, .after_seq = batch[0].seq}).value();
    REQUIRE(paged.size() == 2);
    CHECK(paged[0].id == batch[1].id);
    CHECK(paged[1].id == batch[2].id);
    CHECK(s.stats().value().count(status::completed) == 2);
    CHECK(s.stats("bob").value().count(status::completed) == 1);
    // An archived id is still taken, alone or in a large append.
    std::vector<outbox::event> again = {batch[0]};
    CHECK(outbox::testing::append_keeping(s, again).error().code == errc::invalid_argument);
    std::vector<outbox::event> many;
    for (int i = 0; i < 20; ++i) many.push_back(f.make("carol", "k" + std::to_string(i)));
    many.push_back(batch[1]);
    CHECK(outbox::testing::append_keeping(s, many).error().code == errc::invalid_argument);
  };
  {
    outbox::file_storage s(dir);
    check_reads(s);
    // A compaction copies the archived records into its snapshot; reopened, nothing changed.
    REQUIRE(s.compact().has_value());
    check_reads(s);
  }
  {
    outbox::file_storage s(dir);
    check_reads(s);
    // Purging reaches archived events, and is logged: a reopen does not bring them back.
    CHECK(s.purge_completed(f.t0 + 5s).value() == 1);
    CHECK_FALSE(s.find(batch[0].id).value().has_value());
    CHECK(s.stats().value().count(status::completed) == 1);
  }
  outbox::file_storage s(dir);
  CHECK_FALSE(s.find(batch[0].id).value().has_value());
  CHECK(s.find(batch[1].id).value()->remote_id == "r-b");
  CHECK(s.query({}).value().size() == 3);
  CHECK(s.purge_completed(f.t0 + 1h).value() == 1);
  CHECK(s.query({.status_is = status::completed}).value().empty());
}

TEST_CASE("archived events answer queries by entity id and by type, with every other filter",
          "[storage][file][archive]") {
  // Events of two entities and two types, completed, then archived by a reopen: every query
  // returns exactly the events (archived or live) that pass all its filters, in seq order, also
  // after a compaction, after a purge and after events completed since the reopen.
  const auto dir = temp_path("outbox-archive-fields");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  using outbox::priority::normal;
  // Deliveries in rounds one second apart, until nothing is claimed (a key's events one by one).
  auto deliver_all = [&](outbox::file_storage& s, int first_round) {
    for (int round = first_round;; ++round) {
      std::size_t claimed_now = 0;
      for (const std::string user : {"alice", "bob"}) {
        const auto at = f.t0 + std::chrono::seconds(round);
        std::vector<outbox::event> claimed;
        REQUIRE(s.claim(f.claim_at(user, at, 10), claimed).has_value());
        std::vector<outbox::outcome> done;
        for (const auto& e : claimed) done.push_back(outbox::testing::storage_fixture::complete(e, at));
        if (!done.empty()) REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == done.size());
        claimed_now += claimed.size();
      }
      if (claimed_now == 0) return;
    }
  };
  std::vector<outbox::event> model;  // every stored event, as the index held it
  {
    outbox::file_storage s(dir);
    std::vector<outbox::event> events = {
        f.make("alice", "e1", normal, "t.a"), f.make("alice", "e2", normal, "t.b"), f.make("bob", "e1", normal, "t.b"),
        f.make("alice", "e1", normal, "t.b"), f.make("bob", "e2", normal, "t.a"), f.make("alice", "e2", normal, "t.a")};
    REQUIRE(outbox::testing::append_keeping(s, events).has_value());
    deliver_all(s, 1);
    model = s.query({.limit = 1000}).value();
    REQUIRE(model.size() == 6);
    for (const auto& e : model) REQUIRE(e.status == status::completed);
  }
  auto expected = [&](const outbox::event_query& q) {
    std::vector<outbox::event_id> ids;
    for (const auto& e : model)
      if (e.seq > q.after_seq && q.matches(e) && ids.size() < q.limit) ids.push_back(e.id);
    return ids;
  };
  auto check_queries = [&](outbox::file_storage& s) {
    const std::vector<std::optional<std::string>> entities = {std::nullopt, "e1", "e2", "e3"};
    const std::vector<std::optional<std::string>> types = {std::nullopt, "t.a", "t.b", "t.c"};
    const std::vector<std::optional<std::string>> users = {std::nullopt, "alice", "bob"};
    const std::vector<std::optional<status>> statuses = {std::nullopt, status::completed, status::pending};
    for (const auto& entity : entities)
      for (const auto& type : types)
        for (const auto& user : users)
          for (const auto& st : statuses)
            for (const std::uint64_t after : {std::uint64_t{0}, model[2].seq})
              for (const std::size_t limit : {std::size_t{100}, std::size_t{2}}) {
                const outbox::event_query q{.status_is = st, .user_id = user, .limit = limit, .after_seq = after,
                                            .entity_id = entity, .type = type};
                const auto page = s.query(q).value();
                std::vector<outbox::event_id> got;
                for (const auto& e : page) got.push_back(e.id);
                INFO("entity " << entity.value_or("-") << " type " << type.value_or("-") << " user "
                               << user.value_or("-") << " status " << (st ? static_cast<int>(*st) : -1) << " after "
                               << after << " limit " << limit);
                CHECK(got == expected(q));
              }
  };
  // The rule itself, spelled out once: entity e1's events are the 1st, 3rd and 4th, type t.a's
  // of alice the 1st and 6th.
  {
    outbox::file_storage s(dir);
    const auto e1 = s.query({.entity_id = "e1"}).value();
    REQUIRE(e1.size() == 3);
    CHECK((e1[0].id == model[0].id && e1[1].id == model[2].id && e1[2].id == model[3].id));
    const auto alice_a = s.query({.user_id = "alice", .type = "t.a"}).value();
    REQUIRE(alice_a.size() == 2);
    CHECK((alice_a[0].id == model[0].id && alice_a[1].id == model[5].id));
    check_queries(s);
    REQUIRE(s.compact().has_value());
    check_queries(s);
    // Live events beside the archived ones: one completed after the reopen, one pending.
    std::vector<outbox::event> more = {f.make("bob", "e2", normal, "t.b"), f.make("alice", "e1", normal, "t.a")};
    REQUIRE(outbox::testing::append_keeping(s, more).has_value());
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("bob", f.t0 + 100s, 10), claimed).has_value());
    REQUIRE(claimed.size() == 1);
    std::vector<outbox::outcome> done = {outbox::testing::storage_fixture::complete(claimed[0], f.t0 + 100s)};
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 1);
    for (const auto& e : more) model.push_back(*s.find(e.id).value());
    REQUIRE(model[6].status == status::completed);
    REQUIRE(model[7].status == status::pending);
    check_queries(s);
    // A purge of the archived events completed in the first round.
    const std::size_t purged = s.purge_completed(f.t0 + 2s).value();
    CHECK(purged > 0);
    std::erase_if(model, [&](const outbox::event& e) {
      return e.status == status::completed && e.completed_at < f.t0 + 2s;
    });
    REQUIRE(model.size() == 8 - purged);
    check_queries(s);
  }
  outbox::file_storage s(dir);  // the live ones archived in turn
  check_queries(s);
  REQUIRE(s.compact().has_value());
  check_queries(s);
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

// ---- large appends: logged first, indexed by a helper thread while the appender syncs -----------

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
    REQUIRE(outbox::testing::append_keeping(s, small).has_value());
    REQUIRE(outbox::testing::append_keeping(s, big).has_value());
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
  REQUIRE(outbox::testing::append_keeping(s, more).has_value());
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
    const auto refused = outbox::testing::append_keeping(s, big);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == errc::invalid_argument);
    CHECK(s.disk_usage().writes == usage.writes);
    CHECK_FALSE(s.find(big[1].id).value().has_value());
    big.back() = f.make("alice", "other");
    REQUIRE(outbox::testing::append_keeping(s, big).has_value());
    CHECK(big.front().seq == 1);
  }
  outbox::file_storage s(dir);
  CHECK(s.query({.limit = 1000}).value().size() == big.size());
}

// ---- preallocation -------------------------------------------------------------------------

namespace {
namespace fs = std::filesystem;

/// The files of `from` as a process killed now would leave them on disk, in a new directory.
temp_dir_owner copy_as_killed(const fs::path& from, std::string_view stem) {
  temp_dir_owner to(temp_path(stem));
  fs::create_directories(to.path);
  for (const auto& entry : fs::directory_iterator(from))
    if (entry.path().extension() == ".log") fs::copy_file(entry.path(), to.path / entry.path().filename());
  return to;
}

std::vector<fs::path> segment_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".log") out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::uint64_t bytes_in(const std::vector<fs::path>& files) {
  std::uint64_t total = 0;
  for (const auto& file : files) total += fs::file_size(file);
  return total;
}

bool all_found(outbox::file_storage& s, const std::vector<outbox::event>& events) {
  return std::all_of(events.begin(), events.end(), [&](const outbox::event& e) {
    const auto found = s.find(e.id).value();
    return found && found->seq == e.seq && found->payload == e.payload;
  });
}
}  // namespace

TEST_CASE("the active segment runs ahead in zeros; a kill leaves them, a reopen reads them as free space",
          "[storage][file][preallocation]") {
  const auto dir = temp_path("outbox-file-prealloc");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  outbox::file_options options;  // durable: preallocation is for the syncs
  options.preallocate_bytes = 64 << 10;
  std::vector<outbox::event> all;
  std::optional<outbox::file_storage> s(std::in_place, dir, options);
  for (int round = 0; round < 20; ++round) {
    auto batch = many(f, "alice", 3, "r" + std::to_string(round));
    REQUIRE(outbox::testing::append_keeping(*s, batch).has_value());
    all.insert(all.end(), batch.begin(), batch.end());
  }
  const auto usage = s->disk_usage();
  const auto files = segment_files(dir);
  REQUIRE(files.size() == 1);
  CHECK(usage.preallocated_bytes > 0);
  CHECK(fs::file_size(files[0]) == usage.total_bytes + usage.preallocated_bytes);
  CHECK(fs::file_size(files[0]) % 4096 == 0);
  CHECK(fs::file_size(files[0]) >= (64 << 10));

  {
    const auto killed = copy_as_killed(dir, "outbox-file-prealloc-killed");
    std::optional<outbox::file_storage> reopened(std::in_place, killed.path, options);
    CHECK(reopened->recovery().notes.empty());
    CHECK(reopened->recovery().torn_bytes_truncated == 0);
    CHECK(all_found(*reopened, all));
    CHECK(reopened->disk_usage().total_bytes == usage.total_bytes);
    CHECK(reopened->disk_usage().preallocated_bytes == usage.preallocated_bytes);  // kept, not cut
    // It appends where the log ended, into the zeros.
    auto more = many(f, "alice", 2, "after");
    REQUIRE(outbox::testing::append_keeping(*reopened, more).has_value());
    CHECK(fs::file_size(segment_files(killed.path)[0]) == fs::file_size(files[0]));
    reopened.reset();
    outbox::file_storage again(killed.path, options);
    CHECK(again.recovery().notes.empty());
    CHECK(all_found(again, all));
    CHECK(all_found(again, more));
  }

  // Closing cuts the zeros off: the file is exactly its log.
  s.reset();
  CHECK(fs::file_size(files[0]) == usage.total_bytes);
  outbox::file_storage closed(dir, options);
  CHECK(closed.recovery().notes.empty());
  CHECK(all_found(closed, all));
}

TEST_CASE("a torn group in the zeros is cut with them, and only its own bytes are reported",
          "[storage][file][preallocation]") {
  const auto dir = temp_path("outbox-file-prealloc-torn");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  auto events = many(f, "alice", 5, "k");
  outbox::file_storage s(dir);
  REQUIRE(outbox::testing::append_keeping(s, events).has_value());
  const auto log_end = s.disk_usage().total_bytes;
  REQUIRE(s.disk_usage().preallocated_bytes > 0);
  const auto killed = copy_as_killed(dir, "outbox-file-prealloc-torn-killed");
  const auto segment = segment_files(killed.path)[0];
  {
    // A group whose write the kill interrupted: 37 bytes of it reached the disk.
    std::fstream file(segment, std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(static_cast<std::streamoff>(log_end));
    file << std::string(37, 'x');
  }
  auto reopened = outbox::file_storage::open(killed.path);
  REQUIRE(reopened.has_value());
  CHECK(reopened->recovery().torn_bytes_truncated == 37);
  CHECK(reopened->recovery().torn_file == segment.string());
  CHECK(fs::file_size(segment) == log_end);
  CHECK(all_found(*reopened, events));
}

TEST_CASE("only the last segment ends in zeros: a full one is cut back before the next begins",
          "[storage][file][preallocation]") {
  const auto dir = temp_path("outbox-file-prealloc-roll");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  outbox::file_options options;
  // Zeros reach the segment's end rounded up to a block: past where it rolls.
  options.segment_bytes = (16 << 10) + 123;
  options.preallocate_bytes = 64 << 10;
  std::vector<outbox::event> all;
  outbox::file_storage s(dir, options);
  while (segment_files(dir).size() < 4) {
    auto batch = many(f, "alice", 4, "n" + std::to_string(all.size()));
    REQUIRE(outbox::testing::append_keeping(s, batch).has_value());
    all.insert(all.end(), batch.begin(), batch.end());
  }
  const auto files = segment_files(dir);
  for (std::size_t i = 0; i + 1 < files.size(); ++i) {
    INFO(files[i]);
    CHECK(fs::file_size(files[i]) >= options.segment_bytes);
    CHECK(fs::file_size(files[i]) < options.segment_bytes + (4 << 10));  // no zeros past the last group
  }
  CHECK(fs::file_size(files.back()) <= (20 << 10));
  CHECK(bytes_in(files) == s.disk_usage().total_bytes + s.disk_usage().preallocated_bytes);
  // A sealed segment may hold nothing but whole groups; the copy opens only if that is so.
  const auto killed = copy_as_killed(dir, "outbox-file-prealloc-roll-killed");
  auto reopened = outbox::file_storage::open(killed.path, options);
  REQUIRE(reopened.has_value());
  CHECK(reopened->recovery().notes.empty());
  CHECK(all_found(*reopened, all));
}

TEST_CASE("preallocate_bytes = 0, or no syncs at all: the files are exactly the log", "[storage][file][preallocation]") {
  for (const bool no_sync : {false, true}) {
    INFO("sync none: " << no_sync);
    const auto dir = temp_path("outbox-file-noprealloc");
    temp_dir_owner cleanup(dir);
    outbox::testing::storage_fixture f;
    outbox::file_options options;
    if (no_sync) options.sync = outbox::file_options::sync_policy::none;
    else options.preallocate_bytes = 0;
    outbox::file_storage s(dir, options);
    auto events = many(f, "alice", 40, "k");
    REQUIRE(outbox::testing::append_keeping(s, events).has_value());
    CHECK(s.disk_usage().preallocated_bytes == 0);
    CHECK(bytes_in(segment_files(dir)) == s.disk_usage().total_bytes);
  }
}

TEST_CASE("a write the file system refuses is disk_full; nothing acknowledged is lost, the refused group is cut",
          "[storage][file][fault]") {
  const auto dir = temp_path("outbox-file-full");
  temp_dir_owner cleanup(dir);
  outbox::testing::storage_fixture f;
  outbox::file_options o;   // durable, as shipped
  o.preallocate_bytes = 0;  // every group grows the file, so the size limit stops the next one
  std::vector<outbox::event_id> acknowledged;
  outbox::event_id refused_id;
  std::filesystem::path segment;
  std::uint64_t logged = 0;
  std::uint64_t last_seq = 0;
  {
    outbox::file_storage s(dir, o);
    for (int i = 0; i < 20; ++i) {
      std::vector<outbox::event> one = {f.make("alice", "key-" + std::to_string(i % 3))};
      REQUIRE(outbox::testing::append_keeping(s, one).has_value());
      acknowledged.push_back(one[0].id);
      last_seq = one[0].seq;
    }
    segment = only_segment(dir);
    logged = std::filesystem::file_size(segment);
    {
      const file_size_limit limit(logged + 100);  // room for 100 bytes of the next group only
      std::vector<outbox::event> one = {f.make("alice", "key-refused")};
      refused_id = one[0].id;
      auto refused = outbox::testing::append_keeping(s, one);
      REQUIRE_FALSE(refused.has_value());
      CHECK(refused.error() == errc::disk_full);
      CHECK_THAT(refused.error().what(), Catch::Contains(segment.filename().string()));
    }
    CHECK(std::filesystem::file_size(segment) == logged + 100);  // the part that fitted
    // Memory already holds the refused group, the log does not: the storage refuses everything,
    // reads included, until it is reopened from the log.
    std::vector<outbox::event> later = {f.make("alice", "key-later")};
    auto after = outbox::testing::append_keeping(s, later);
    REQUIRE_FALSE(after.has_value());
    CHECK(after.error() == errc::disk_full);
    CHECK_THAT(after.error().what(), Catch::Contains("reopen"));
    auto found = s.find(acknowledged.front());
    REQUIRE_FALSE(found.has_value());
    CHECK(found.error() == errc::disk_full);
  }
  outbox::file_storage s(dir, o);
  CHECK(s.recovery().torn_bytes_truncated > 0);
  CHECK(s.recovery().torn_bytes_truncated <= 100);
  CHECK(s.recovery().torn_file == segment.string());
  CHECK(std::filesystem::file_size(segment) == logged);
  for (const auto& id : acknowledged) CHECK(s.find(id).value().has_value());
  CHECK_FALSE(s.find(refused_id).value().has_value());
  std::vector<outbox::event> more = {f.make("alice", "key-after")};
  REQUIRE(outbox::testing::append_keeping(s, more).has_value());
  CHECK(more[0].seq == last_seq + 1);  // the refused event's seq is free again: it never reached the log
}

// ---- a full file system (a small tmpfs: needs the right to mount) -------------------------------

namespace {
bool has_leftover_tmp(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".tmp") return true;
  return false;
}
}  // namespace

TEST_CASE("on a full file system the log fills up to its last record: preallocation gives way, the refusal is disk_full",
          "[storage][file][fault][enospc]") {
  small_filesystem fs(1 << 20);
  if (!have_small_filesystem(fs)) return;
  fs.fill_leaving("filler", 512 << 10);  // half a MiB left: less than the MiB of zeros the log asks for
  const auto dir = fs.path() / "outbox";
  const outbox::file_options o;  // durable, 1 MiB preallocated: as shipped
  outbox::testing::storage_fixture f;
  std::vector<outbox::event_id> acknowledged;
  std::optional<outbox::error> refusal;
  {
    outbox::file_storage s(dir, o);
    for (int i = 0; i < 1000 && !refusal; ++i) {
      std::vector<outbox::event> one = {f.make("alice", "key-" + std::to_string(i % 5))};
      one[0].payload = std::string(2000, 'p');
      if (auto appended = s.append(one)) acknowledged.push_back(one[0].id);
      else refusal = appended.error();
    }
  }
  REQUIRE(refusal.has_value());
  CHECK(*refusal == errc::disk_full);
  // The zeros did not fit; the records did, until the file system was full. (Before, the first
  // append already failed: its MiB of zeros did not fit.)
  CHECK(acknowledged.size() * 2000 > (400u << 10));
  {
    outbox::file_storage s(dir, o);  // still full: opening needs no room
    for (const auto& id : acknowledged) CHECK(s.find(id).value().has_value());
    std::filesystem::remove(fs.path() / "filler");
    std::vector<outbox::event> more = {f.make("alice", "after")};
    CHECK(s.append(more).has_value());  // room again
  }
}

TEST_CASE("a compaction that does not fit is given up cleanly: the storage goes on, and compacts once there is room",
          "[storage][file][fault][enospc][compaction]") {
  small_filesystem fs(1 << 20);
  if (!have_small_filesystem(fs)) return;
  const auto dir = fs.path() / "outbox";
  outbox::file_options o;
  o.preallocate_bytes = 0;  // the files are exactly the log: the arithmetic below holds
  o.compact_min_dead_bytes = 64 << 10;
  o.compact_dead_ratio = 1.5;  // not after the claims (dead = live), only after the outcomes
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> events;
  for (int i = 0; i < 100; ++i) {
    events.push_back(f.make("alice", "key-" + std::to_string(i)));
    events.back().payload = std::string(2000, 'p');
  }
  {
    outbox::file_storage s(dir, o);
    // Every record holds an event's whole state, about 2.1 KB here: 210 KB per hundred.
    REQUIRE(outbox::testing::append_keeping(s, events).has_value());
    fs.fill_leaving("filler", 460 << 10);  // room for the claims and outcomes, not for a snapshot after them
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 100), claimed).value() == 100);
    std::vector<outbox::outcome> done;
    for (const auto& e : claimed) done.push_back(outbox::testing::storage_fixture::complete(e, f.t0));
    // 420 KB dead against 210 KB live: this flush compacts, and the snapshot does not fit. The
    // outcomes themselves are durable all the same.
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 100);
    CHECK(s.disk_usage().compactions == 0);
    CHECK(s.disk_usage().failed_maintenance == 1);
    CHECK_FALSE(has_leftover_tmp(dir));  // the half-written snapshot is gone, its room given back
    // The storage goes on: reads, and writes that fit.
    CHECK(s.find(events[0].id).value()->status == status::completed);
    std::vector<outbox::event> small = {f.make("alice", "small")};
    REQUIRE(outbox::testing::append_keeping(s, small).has_value());
    events.push_back(small[0]);
    CHECK(s.disk_usage().failed_maintenance == 1);  // not tried again on every flush
    // Asked for, a compaction that does not fit says so, and changes nothing.
    auto refused = s.compact();
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error() == errc::disk_full);
    CHECK_FALSE(has_leftover_tmp(dir));
    CHECK(s.find(small[0].id).value().has_value());
    // Room again: it compacts.
    const std::uint64_t before = s.disk_usage().total_bytes;
    std::filesystem::remove(fs.path() / "filler");
    REQUIRE(s.compact().has_value());
    CHECK(s.disk_usage().compactions == 1);
    CHECK(s.disk_usage().total_bytes < before / 2);
  }
  outbox::file_storage s(dir, o);
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto found = s.find(events[i].id).value();
    REQUIRE(found.has_value());
    CHECK(found->status == (i < 100 ? status::completed : status::pending));
  }
}

TEST_CASE("a compaction may use the room its own preallocation took", "[storage][file][fault][enospc][compaction]") {
  small_filesystem fs(1 << 20);
  if (!have_small_filesystem(fs)) return;
  const auto dir = fs.path() / "outbox";
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> events;
  for (int i = 0; i < 50; ++i) {
    events.push_back(f.make("alice", "key-" + std::to_string(i)));
    events.back().payload = std::string(2000, 'p');
  }
  outbox::file_storage s(dir);  // 1 MiB preallocated, as shipped: on this file system, all of the rest
  REQUIRE(outbox::testing::append_keeping(s, events).has_value());
  CHECK(fs.free_bytes() < (16u << 10));
  CHECK(s.disk_usage().preallocated_bytes > (800u << 10));
  // The snapshot (about 105 KB) fits only in room the zeros held: they are cut first.
  REQUIRE(s.compact().has_value());
  CHECK(s.disk_usage().compactions == 1);
  for (const auto& e : events) CHECK(s.find(e.id).value().has_value());
}

TEST_CASE("file storage stats: stats(), stats(user) and stats(user, now)", "[storage][file][stats]") {
  temp_file_storage s;
  outbox_test::check_stats_shape(s);
}
