// outbox::postgres_storage shared by many relays under SIGKILL: producer threads enqueue into one
// database while 4 relay processes (an Outbox each, its own connection) deliver from it; the test
// SIGKILLs a random relay at random moments, at least 30 times, and starts a new one in its place.
// Real processes, real kills: fork, then kill(pid, SIGKILL).
//
// Every process appends what it did to one sink file opened with O_APPEND, one write(2) per
// record (records of one call go out in one write), so the file is the order in which things
// happened across processes:
//
//   A <id>                                     an enqueue returned with this event id (producer)
//   S|F <pid> <id> <lease> <lease_until> <t>   the transport took the event at t (us since the epoch)
//                                              under that lease; S: it answers delivered, F: retry
//   Z <pid> <id> <lease> <t>                   the transport returned that answer at t
//   D <pid> <id>                               on_delivered ran: "completed" was recorded
//   X <pid> <text>                             something that must not happen (an error report)
//
// Afterwards, with every relay stopped and the storage drained, the test checks:
//   - every acknowledged event is stored, completed, and was delivered (an S record);
//   - per ordering key, first deliveries came in append order;
//   - an event delivered twice was, at each earlier delivery, in flight on a relay that was
//     then killed before on_delivered ran for it (duplicates only among events in flight at a kill);
//   - no two leases of one event were live at once: a hand-over's lease is live from the hand-over
//     until its answer came back (Z), or until its lease_until if its relay was killed first, and
//     the next hand-over of the event starts only after that.
// The run takes its server from the PostgreSQL test fixture (support/postgres.hpp) and skips
// itself with one line when there is none.
#include <catch2/catch.hpp>

#include <outbox/outbox.hpp>
#include <outbox/storage/postgres.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/postgres.hpp"
#include "support/temp_sqlite.hpp"

namespace {

using namespace std::chrono_literals;

std::int64_t now_us() { return outbox::to_micros(outbox::system_clock{}.now()); }

/// One process's end of the sink: every record one write(2) on an O_APPEND descriptor.
class sink {
 public:
  explicit sink(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) {}
  sink(const sink&) = delete;
  sink& operator=(const sink&) = delete;
  ~sink() {
    if (fd_ >= 0) ::close(fd_);
  }

  void write(const std::string& records) const noexcept {
    std::size_t done = 0;
    while (done < records.size()) {
      const ssize_t n = ::write(fd_, records.data() + done, records.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ::_exit(5);  // nowhere to report to
      done += static_cast<std::size_t>(n);
    }
  }

  void fail(const std::string& what) const noexcept {
    std::string line = "X " + std::to_string(::getpid()) + " " + what;
    std::replace(line.begin(), line.end(), '\n', ' ');
    write(line + "\n");
  }

 private:
  int fd_;
};

/// The backend: records every hand-over with its lease before answering, and the answer's
/// return after; 85 % delivered, the rest retryable or unavailable. Holds each batch a moment
/// after recording it, so kills often land between the backend's acceptance and the recorded
/// outcome. Only the processing thread calls send.
class sink_transport {
 public:
  sink_transport(const sink& out, std::uint64_t seed) : out_(&out), random_(seed) {}

  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    const std::string pid = std::to_string(::getpid());
    const std::string taken = std::to_string(now_us());
    std::string records;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const outbox::event& e = batch[i];
      const auto roll = random_() % 100;
      const bool delivered = roll < 85;
      records += (delivered ? "S " : "F ") + pid + " " + e.id.to_string() + " " + std::to_string(e.lease) + " " +
                 std::to_string(outbox::to_micros(e.lease_until)) + " " + taken + "\n";
      if (delivered) results[i] = outbox::delivery_result::delivered("remote-" + e.id.to_string());
      else if (roll < 93) results[i] = outbox::delivery_result::retryable("crash test: try again");
      else results[i] = outbox::delivery_result::unavailable("crash test: offline");
    }
    out_->write(records);
    std::this_thread::sleep_for(std::chrono::microseconds(random_() % 3000));
    const std::string answered = std::to_string(now_us());
    records.clear();
    for (const outbox::event& e : batch)
      records += "Z " + pid + " " + e.id.to_string() + " " + std::to_string(e.lease) + " " + answered + "\n";
    out_->write(records);
  }

 private:
  const sink* out_;
  std::mt19937_64 random_;
};

/// What a relay process and the parent's check share.
struct setup {
  std::string conninfo;
  std::string schema;
  std::string sink_path;
};

outbox::result<outbox::postgres_storage> open_storage(const setup& s) {
  return outbox::postgres_storage::open(s.conninfo, outbox_test::pg_options(s.schema));
}

/// The storage of a child process; a child that cannot open it says so in the sink and exits.
outbox::postgres_storage open_in_child(const setup& s, const sink& out, const char* who) {
  auto storage = open_storage(s);
  if (!storage) {
    out.fail(std::string(who) + ": opening the storage failed: " + storage.error().what());
    ::_exit(2);
  }
  return std::move(*storage);
}

/// The lease of the relays: a killed relay's claims come back this long after they were made.
constexpr auto relay_lease = 3s;

/// What producers give each event: kills and refusals use up attempts, and a dead event would end
/// its at-least-once check early.
constexpr int relay_max_attempts = 1'000'000;

/// A relay process: an Outbox over its own connection, delivering until it is killed.
[[noreturn]] void relay_main(const setup& s, std::uint64_t seed) noexcept {
  try {
    const sink out(s.sink_path);
    outbox::postgres_storage storage = open_in_child(s, out, "relay");
    outbox::options options;
    options.batch_size = 8;
    options.poll_interval = 50ms;
    options.lease = relay_lease;
    options.max_attempts = relay_max_attempts;
    options.exclusive = false;         // several relays share the database
    outbox::Outbox<outbox::postgres_storage, sink_transport, outbox::system_clock, outbox::fixed_backoff> box(
        std::move(storage), sink_transport(out, seed), outbox::system_clock{}, outbox::fixed_backoff(10ms), options);
    const std::string pid = std::to_string(::getpid());
    box.on_delivered([&](const outbox::event& e, const outbox::delivery_result&) {
      out.write("D " + pid + " " + e.id.to_string() + "\n");
    });
    box.on_dead([&](const outbox::event& e, const outbox::delivery_result&) { out.fail("event " + e.id.to_string() + " died"); });
    box.on_error([&](const outbox::error& e) { out.fail("relay: " + e.what()); });
    box.set_user("alice");
    box.start();
    for (;;) ::pause();  // until SIGKILL
  } catch (const std::exception& e) {
    std::fprintf(stderr, "relay %d threw: %s\n", static_cast<int>(::getpid()), e.what());
  }
  ::_exit(3);
}

volatile std::sig_atomic_t producers_stop = 0;

/// The producer process: threads enqueueing single events and batches of three over 24 keys,
/// recording each acknowledged id, until SIGTERM.
[[noreturn]] void producer_main(const setup& s) noexcept {
  std::signal(SIGTERM, [](int) { producers_stop = 1; });
  int code = 0;
  try {
    const sink out(s.sink_path);
    outbox::postgres_storage storage = open_in_child(s, out, "producer");
    outbox::options options;
    options.max_attempts = relay_max_attempts;
    outbox::Outbox<outbox::postgres_storage, sink_transport> box(std::move(storage), sink_transport(out, 0),
                                                                 outbox::system_clock{}, outbox::exponential_backoff{},
                                                                 options);
    std::vector<std::thread> threads;
    for (int p = 0; p < 2; ++p) {
      threads.emplace_back([&, p] {
        std::mt19937_64 random(static_cast<std::uint64_t>(::getpid()) * 7 + static_cast<std::uint64_t>(p));
        auto make = [&](int n) {
          return outbox::new_event{.type = "sample.recorded",
                                   .entity_id = "key-" + std::to_string(p) + "-" + std::to_string(random() % 12),
                                   .payload = std::to_string(n),
                                   .user_id = "alice",
                                   .ordering_key = "",
                                   .priority = random() % 8 == 0 ? outbox::priority::high : outbox::priority::normal,
                                   .max_attempts = 0};
        };
        for (int n = 1; producers_stop == 0; ++n) {
          std::string acked;
          if (n % 4 == 0) {
            const outbox::new_event batch[] = {make(n), make(n), make(n)};
            auto ids = box.enqueue(std::span<const outbox::new_event>(batch));
            if (!ids) out.fail("producer: batch enqueue failed: " + ids.error().what());
            else
              for (const auto& id : *ids) acked += "A " + id.to_string() + "\n";
          } else {
            auto id = box.enqueue(make(n));
            if (!id) out.fail("producer: enqueue failed: " + id.error().what());
            else acked = "A " + id->to_string() + "\n";
          }
          out.write(acked);
          std::this_thread::sleep_for(std::chrono::microseconds(random() % 20'000));
        }
      });
    }
    for (auto& t : threads) t.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "producer threw: %s\n", e.what());
    code = 3;
  }
  ::_exit(code);
}

template <class Body>
pid_t spawn(Body body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) body();
  return pid;
}

int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

/// Every child still running is killed and reaped when this goes away, also when a check throws.
struct children {
  std::vector<pid_t> relays;
  pid_t producer = -1;
  ~children() {
    for (const pid_t pid : relays) stop(pid);
    stop(producer);
  }
  static void stop(pid_t pid) {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    reap(pid);
  }
};

// ---- the sink, read back --------------------------------------------------------------------

struct hand_over {
  long pid = 0;
  std::uint64_t lease = 0;
  std::int64_t lease_until = 0, taken = 0;
  std::optional<std::int64_t> answered;
  bool accepted = false;
  std::size_t position = 0;  ///< place in the sink
};

struct history {
  bool acked = false;
  std::vector<hand_over> hand_overs;
  std::set<long> delivered_by;  ///< pids whose on_delivered ran for it
};

struct sink_contents {
  std::unordered_map<std::string, history> events;
  std::vector<std::string> failures;
};

sink_contents read_sink(const std::string& path) {
  sink_contents out;
  std::ifstream in(path);
  std::string line;
  for (std::size_t position = 0; std::getline(in, line); ++position) {
    std::istringstream fields(line);
    std::string tag;
    fields >> tag;
    if (tag == "A") {
      std::string id;
      fields >> id;
      out.events[id].acked = true;
    } else if (tag == "S" || tag == "F") {
      hand_over h;
      std::string id;
      fields >> h.pid >> id >> h.lease >> h.lease_until >> h.taken;
      h.accepted = tag == "S";
      h.position = position;
      out.events[id].hand_overs.push_back(h);
    } else if (tag == "Z") {
      long pid = 0;
      std::string id;
      std::uint64_t lease = 0;
      std::int64_t at = 0;
      fields >> pid >> id >> lease >> at;
      for (auto& h : out.events[id].hand_overs)
        if (h.pid == pid && h.lease == lease && !h.answered) h.answered = at;
    } else if (tag == "D") {
      long pid = 0;
      std::string id;
      fields >> pid >> id;
      out.events[id].delivered_by.insert(pid);
    } else {
      out.failures.push_back(line);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("postgres_storage: 4 relays SIGKILLed at random deliver every event once per lease, in key order",
          "[crash][postgres]") {
  OUTBOX_REQUIRE_POSTGRES();
  const std::uint64_t seed = []() -> std::uint64_t {
    if (const char* s = std::getenv("OUTBOX_CRASH_SEED")) return static_cast<std::uint64_t>(std::strtoull(s, nullptr, 10));
    return (static_cast<std::uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  }();
  int kills_wanted = 36;
  if (const char* k = std::getenv("OUTBOX_CRASH_KILLS")) kills_wanted = std::max(1, std::atoi(k));
  std::printf("postgres relays crash test: seed %llu, %d kills\n", static_cast<unsigned long long>(seed), kills_wanted);
  std::fflush(stdout);
  std::mt19937_64 random(seed);

  const outbox_test::temp_file_owner sink_file(outbox_test::temp_path("outbox-relays-sink"));
  const outbox_test::schema_owner schema(outbox_test::fresh_schema());
  const setup s{*outbox_test::pg_conninfo(), schema.schema, sink_file.path.string()};
  {
    // The schema is created once, before any relay starts; no connection stays open across a fork.
    auto created = open_storage(s);
    REQUIRE(created);
  }

  const auto started = std::chrono::steady_clock::now();
  std::map<long, std::int64_t> killed_at;  // relay pid -> when it was killed
  children kids;
  kids.producer = spawn([&] { producer_main(s); });
  for (int i = 0; i < 4; ++i) kids.relays.push_back(spawn([&, i] { relay_main(s, seed + static_cast<std::uint64_t>(i)); }));

  int kills = 0;
  std::vector<std::string> violations;
  for (std::uint64_t next_seed = seed + 4; kills < kills_wanted; ++next_seed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + static_cast<int>(random() % 900)));
    const std::size_t victim = random() % kids.relays.size();
    const pid_t pid = kids.relays[victim];
    ::kill(pid, SIGKILL);
    killed_at[pid] = now_us();
    const int status = reap(pid);
    kids.relays[victim] = -1;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
      violations.push_back("relay " + std::to_string(pid) + " ended by itself before its kill, wait status " +
                           std::to_string(status));
    ++kills;
    kids.relays[victim] = spawn([&] { relay_main(s, next_seed); });
  }
  ::kill(kids.producer, SIGTERM);
  const int producer_status = reap(kids.producer);
  kids.producer = -1;
  CHECK((WIFEXITED(producer_status) && WEXITSTATUS(producer_status) == 0));

  // No more forks: the parent may connect now. The relays drain what is left (the last kills'
  // claims come back after their lease).
  auto storage = open_storage(s);
  REQUIRE(storage);
  const auto deadline = std::chrono::steady_clock::now() + relay_lease + 30s;
  outbox::event_stats stats;
  for (;;) {
    auto counted = storage->stats(std::nullopt, outbox::system_clock{}.now());
    REQUIRE(counted);
    stats = *counted;
    if (stats.count(outbox::status::completed) == stats.total() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(50ms);
  }
  for (pid_t& pid : kids.relays) children::stop(std::exchange(pid, -1));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  // What the storage holds, in append order.
  std::vector<outbox::event> stored;
  for (std::uint64_t after = 0;;) {
    auto page = storage->query({.status_is = std::nullopt, .user_id = std::nullopt, .limit = 5000, .after_seq = after});
    REQUIRE(page);
    if (page->empty()) break;
    after = page->back().seq;
    stored.insert(stored.end(), page->begin(), page->end());
  }
  const sink_contents seen = read_sink(s.sink_path);
  for (const auto& f : seen.failures) violations.push_back("reported: " + f);
  // The kept completed count agrees with the events: a killed relay's transaction took its
  // share of the count with it.
  const auto counted_after = storage->stats(std::nullopt, outbox::system_clock{}.now());
  REQUIRE(counted_after);
  const auto completed_stored = static_cast<std::size_t>(std::count_if(
      stored.begin(), stored.end(), [](const outbox::event& e) { return e.status == outbox::status::completed; }));
  CHECK(counted_after->count(outbox::status::completed) == completed_stored);
  CHECK(counted_after->total() == stored.size());

  std::unordered_map<std::string, const outbox::event*> by_id;
  for (const auto& e : stored) {
    by_id.emplace(e.id.to_string(), &e);
    if (e.status != outbox::status::completed)
      violations.push_back("event " + e.id.to_string() + " is " + std::string(outbox::to_string(e.status)) +
                           " after the drain");
  }
  std::size_t acked = 0, accepted = 0, duplicates = 0, in_flight_at_kills = 0, after_killed_lease = 0;
  for (const auto& [id, h] : seen.events) {
    const std::string name = "event " + id;
    acked += h.acked;
    if (h.acked && !by_id.count(id)) violations.push_back("acknowledged " + name + " is missing");
    if (!h.hand_overs.empty() && !by_id.count(id)) violations.push_back(name + " was handed over but is not stored");
    const auto accepts = std::count_if(h.hand_overs.begin(), h.hand_overs.end(), [](const auto& o) { return o.accepted; });
    accepted += static_cast<std::size_t>(accepts);
    if (h.acked && accepts == 0) violations.push_back("acknowledged " + name + " was never delivered");
    // Every delivery but the last was in flight on a relay killed before it recorded the outcome.
    std::size_t seen_accepts = 0;
    for (const auto& o : h.hand_overs) {
      if (!o.accepted || ++seen_accepts == static_cast<std::size_t>(accepts)) continue;
      ++duplicates;
      if (!killed_at.count(o.pid) || h.delivered_by.count(o.pid))
        violations.push_back(name + " was delivered again after relay " + std::to_string(o.pid) +
                             " had delivered it" + (killed_at.count(o.pid) ? " and recorded it" : " and was never killed"));
      else ++in_flight_at_kills;
    }
    // One live lease at a time.
    for (std::size_t i = 1; i < h.hand_overs.size(); ++i) {
      const hand_over& before = h.hand_overs[i - 1];
      const hand_over& next = h.hand_overs[i];
      // The answer came back before the outcome was recorded, so it bounds the lease's life
      // from below; without an answer (killed mid-send) the lease lives until it ends.
      const std::int64_t live_until =
          before.answered ? std::min(before.lease_until, *before.answered) : before.lease_until;
      after_killed_lease += !before.answered;
      if (next.taken < live_until || next.lease == before.lease)
        violations.push_back(name + ": lease " + std::to_string(next.lease) + " (relay " + std::to_string(next.pid) +
                             ") was handed the event while lease " + std::to_string(before.lease) + " (relay " +
                             std::to_string(before.pid) + ") was live until " + std::to_string(live_until) + ", " +
                             std::to_string(live_until - next.taken) + " us later");
    }
  }
  // Per ordering key, first deliveries in append order.
  std::map<std::string, std::size_t> last_first_delivery;  // key -> sink position
  for (const auto& e : stored) {
    const auto found = seen.events.find(e.id.to_string());
    if (found == seen.events.end()) continue;
    const auto& overs = found->second.hand_overs;
    const auto first = std::find_if(overs.begin(), overs.end(), [](const auto& o) { return o.accepted; });
    if (first == overs.end()) continue;
    auto& previous = last_first_delivery[e.ordering_key];
    if (first->position < previous)
      violations.push_back("ordering key " + e.ordering_key + ": event " + e.id.to_string() + " (seq " +
                           std::to_string(e.seq) + ") reached the backend before an event appended earlier");
    previous = std::max(previous, first->position);
  }

  std::printf("postgres relays crash test: %d kills in %.1f s; %zu events stored, %zu acknowledged; %zu deliveries, "
              "%zu duplicates, each in flight on a relay at its kill (%zu); %zu hand-overs after a killed relay's "
              "lease ended\n",
              kills, seconds, stored.size(), acked, accepted, duplicates, in_flight_at_kills, after_killed_lease);
  INFO("seed " << seed << " (replay with OUTBOX_CRASH_SEED=" << seed << ")");
  for (std::size_t i = 0; i < violations.size() && i < 25; ++i) FAIL_CHECK(violations[i]);
  INFO(violations.size() << " violations in all");
  REQUIRE(violations.empty());
  CHECK(kills >= std::min(kills_wanted, 30));
  CHECK(acked > 0);
  CHECK(stats.count(outbox::status::completed) == stats.total());
}
