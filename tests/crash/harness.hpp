#pragma once
// Crash tests with real processes: a child works on a storage under load (producers saving and
// enqueuing, the background runner delivering) and is killed with SIGKILL at a random moment;
// the parent reopens the storage and checks what it holds against what the child reported.
// Generic over how a storage is opened, so every durable storage runs the same test:
//
//     auto report = outbox_crash::run([path] { return outbox::sqlite_storage::open(path); }, config);
//
// The child reports over a pipe, one write(2) per 17-byte record: a tag and an event id. A pipe
// write of at most PIPE_BUF bytes is atomic, so records of many threads never interleave and a
// kill leaves a record wholly in the pipe or not at all.
//
//   A  an enqueue or save RETURNED successfully with this event id: it must survive every kill
//   S  the transport was handed the event and answers "delivered": the backend has it
//   F  the transport was handed the event and answers retryable or unavailable
//   D  on_delivered ran, so the outcome "completed" was recorded: it must stay completed
//   E  the child hit a failure that should never happen (details on its stderr)
//   R  the child is ready: storage open, runner and producers started (no id)
//
// What the parent checks after every kill, on the reopened storage:
//   - it opens cleanly (no corrupt_data, no other error);
//   - every acknowledged event is there; every event the transport saw is there;
//   - every event known completed (D seen, or completed in an earlier reopening) is completed,
//     and is never handed to the transport again;
//   - an event accepted but not reported done in the killed life is completed or processing:
//     it was in flight at the kill, and only such events may be accepted a second time;
//   - within one life nothing is handed over again after the backend accepted it (the lease
//     outlives the life, so no legitimate resend exists), and on_delivered follows an accept;
//   - storages with an entity half: every entity and its newest event agree (atomic writes).
// And after a final life that runs without a kill until nothing is left: every acknowledged
// event is completed, every event is, and the first deliveries of one ordering key came in
// append order.

#include <outbox/outbox.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/entities.hpp"

namespace outbox_crash {

using namespace std::chrono_literals;

// ---- the report protocol -------------------------------------------------------------------

enum class tag : char { acked = 'A', accepted = 'S', refused = 'F', done = 'D', failure = 'E', ready = 'R' };

inline constexpr std::size_t record_size = 17;
static_assert(record_size <= PIPE_BUF, "records must be written atomically: at most PIPE_BUF bytes");

struct record {
  tag what = tag::failure;
  outbox::event_id id{};
};

/// Exit codes of a child that ended on its own (a killed child has none).
enum child_exit : int { drained = 0, open_failed = 2, threw = 3, drain_timed_out = 4, pipe_broken = 5, too_long = 6 };

/// The child's side of the pipe. Copyable; any thread.
class reporter {
 public:
  explicit reporter(int fd) noexcept : fd_(fd) {}

  void operator()(tag what, const outbox::event_id& id = {}) const noexcept {
    unsigned char bytes[record_size];
    bytes[0] = static_cast<unsigned char>(what);
    for (int b = 0; b < 8; ++b) {
      bytes[1 + b] = static_cast<unsigned char>(id.high >> (56 - 8 * b));
      bytes[9 + b] = static_cast<unsigned char>(id.low >> (56 - 8 * b));
    }
    for (;;) {
      const ssize_t written = ::write(fd_, bytes, record_size);
      if (written == static_cast<ssize_t>(record_size)) return;
      if (written < 0 && errno == EINTR) continue;
      ::_exit(child_exit::pipe_broken);  // nobody to report to: the parent is gone
    }
  }

  /// Something that must not happen: told on stderr, and counted by the parent.
  void fail(const std::string& what) const noexcept {
    std::fprintf(stderr, "outbox crash child %d: %s\n", static_cast<int>(::getpid()), what.c_str());
    (*this)(tag::failure);
  }

 private:
  int fd_;
};

inline record decode(const unsigned char* bytes) {
  record r;
  r.what = static_cast<tag>(bytes[0]);
  for (int b = 0; b < 8; ++b) {
    r.id.high = (r.id.high << 8) | bytes[1 + b];
    r.id.low = (r.id.low << 8) | bytes[9 + b];
  }
  return r;
}

// ---- the child: producers, the runner, a reporting transport ----------------------------------

/// What one child life does.
struct workload {
  int repository_producers = 2;  ///< threads saving hourly steps (natural keys: updates coalesce)
  int enqueue_producers = 1;     ///< threads calling Outbox::enqueue, single and batched
  bool produce = true;           ///< false: the final life, which only delivers what is left
  bool always_deliver = false;   ///< false: the transport refuses some events (retryable, unavailable)
  std::chrono::microseconds producer_pause{300};  ///< most a producer waits between writes
  std::uint64_t seed = 0;
};

/// The backend: reports every event it is handed before answering. Only the processing thread
/// calls send, so its generator needs no lock.
class reporting_transport {
 public:
  reporting_transport(reporter report, std::uint64_t seed, bool always_deliver)
      : report_(report), random_(seed), always_deliver_(always_deliver) {}

  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto roll = always_deliver_ ? 0 : random_() % 100;
      if (roll < 82) {
        report_(tag::accepted, batch[i].id);
        results[i] = outbox::delivery_result::delivered("remote-" + batch[i].id.to_string());
      } else if (roll < 92) {
        report_(tag::refused, batch[i].id);
        results[i] = outbox::delivery_result::retryable("crash test: try again");
      } else {
        report_(tag::refused, batch[i].id);
        results[i] = outbox::delivery_result::unavailable("crash test: offline");
      }
    }
    // Hold the batch a moment after the backend took it: kills then often land between the
    // acceptance and the recorded outcome, the window in which duplicates are born.
    std::this_thread::sleep_for(std::chrono::microseconds(random_() % 2000));
  }

 private:
  reporter report_;
  std::mt19937_64 random_;
  bool always_deliver_;
};

template <class Open>
using opened_storage_t = std::remove_cvref_t<decltype(*std::declval<std::invoke_result_t<Open&>&>())>;

/// One life of the child. Returns only in the final life (or on a failure); otherwise it works
/// until the parent's SIGKILL.
template <class Open>
int child_life(Open& open, reporter report, const workload& load) {
  using storage_type = opened_storage_t<Open>;
  using box_type = outbox::Outbox<storage_type, reporting_transport, outbox::system_clock, outbox::fixed_backoff>;

  auto opened = open();
  if (!opened) {
    report.fail("reopening the storage failed: " + opened.error().what());
    return child_exit::open_failed;
  }
  // The previous life was SIGKILLed with claims in flight; their leases would hold those events
  // for options.lease (2 min) before they return to pending. One process owns the storage at a
  // time here (the parent reaped the previous one before starting this one), so every lease in
  // the storage belongs to a dead process: end them now, as an application that knows it is the
  // storage's only user may do at startup. The public maintenance call does it; the next claim
  // then returns those events to pending. (A short lease instead would also expire claims of
  // this life under a slow, sanitised run and blur the "no resend within a life" check.)
  const outbox::timestamp now = outbox::system_clock{}.now();
  if (auto ended = opened->clamp_schedule(now + 24h, now); !ended) {
    report.fail("ending the dead process's leases failed: " + ended.error().what());
    return child_exit::open_failed;
  }

  outbox::options options;
  options.batch_size = 16;
  options.poll_interval = 100ms;
  // Kills and refusals use up attempts; a dead event would end its at-least-once check early.
  options.max_attempts = 1'000'000;
  box_type box(std::move(*opened), reporting_transport(report, load.seed, load.always_deliver), outbox::system_clock{},
               outbox::fixed_backoff(10ms), options);
  box.on_delivered([report](const outbox::event& e, const outbox::delivery_result&) { report(tag::done, e.id); });
  box.on_dead([report](const outbox::event& e, const outbox::delivery_result&) {
    report.fail("event " + e.id.to_string() + " died: " + e.last_error);
  });
  box.on_error([report](const outbox::error& e) { report.fail("outbox error: " + e.what()); });
  box.set_user("alice");
  box.start();

  if (!load.produce) {
    report(tag::ready);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      auto stats = box.stats();
      if (!stats) {
        report.fail("stats failed: " + stats.error().what());
        return child_exit::threw;
      }
      if (stats->count(outbox::status::completed) == stats->total()) break;
      if (stats->count(outbox::status::dead) > 0) {
        report.fail(std::to_string(stats->count(outbox::status::dead)) + " events are dead and will never complete");
        return child_exit::drain_timed_out;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        report.fail("the final life did not complete every event within 30 s");
        return child_exit::drain_timed_out;
      }
      std::this_thread::sleep_for(5ms);
    }
    box.stop();
    return child_exit::drained;
  }

  // A safety net: a child the parent forgot to kill stops by itself (and the parent says so).
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  auto pause = [&](std::mt19937_64& random) {
    if (load.producer_pause.count() > 0)
      std::this_thread::sleep_for(std::chrono::microseconds(
          random() % static_cast<std::uint64_t>(load.producer_pause.count() + 1)));
  };

  // One repository shared by the saving threads, as an application would share it. Storages
  // without an entity half get no repository and no saving threads.
  using steps_repository =
      std::conditional_t<outbox::entity_storage<storage_type>,
                         outbox::Repository<outbox_test::hourly_steps, storage_type, outbox::coalesce_unsent,
                                            outbox::system_clock>,
                         std::monostate>;
  std::optional<steps_repository> steps;
  std::vector<std::thread> producers;
  if constexpr (outbox::entity_storage<storage_type>) {
    outbox::repository_options repository_options;
    repository_options.max_attempts = options.max_attempts;
    steps.emplace(box, repository_options);
    for (int p = 0; p < load.repository_producers; ++p) {
      producers.emplace_back([&, p] {
        std::mt19937_64 random(load.seed * 31 + static_cast<std::uint64_t>(p));
        for (int n = 1; std::chrono::steady_clock::now() < give_up; ++n) {
          // 48 natural keys (two days of hours), so most saves update an entity, and a save to
          // one whose change is still unsent rewrites that event instead of queueing another.
          const auto slot = static_cast<int>(random() % 48);
          const std::string date = slot < 24 ? "2026-11-21" : "2026-11-22";
          auto saved = steps->save({.id = "",
                                    .user_id = "alice",
                                    .date = date,
                                    .hour = slot % 24,
                                    .count = n,
                                    .occurred_at = outbox::from_micros(1'795'000'000'000'000 + slot * 3'600'000'000LL)});
          if (saved) report(tag::acked, saved->event);
          else report.fail("save failed: " + saved.error().what());
          pause(random);
        }
        ::_exit(child_exit::too_long);
      });
    }
  }
  for (int p = 0; p < load.enqueue_producers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937_64 random(load.seed * 37 + 1000 + static_cast<std::uint64_t>(p));
      auto make = [&](int n) {
        return outbox::new_event{.type = "sample.recorded",
                                 .entity_id = "sample-" + std::to_string(p) + "-" + std::to_string(random() % 16),
                                 .payload = std::to_string(n),
                                 .user_id = "",
                                 .ordering_key = "",
                                 .priority = random() % 8 == 0 ? outbox::priority::high : outbox::priority::normal,
                                 .max_attempts = 0};
      };
      for (int n = 1; std::chrono::steady_clock::now() < give_up; ++n) {
        if (n % 4 == 0) {
          // A batch: all of it stored or none.
          const outbox::new_event batch[] = {make(n), make(n), make(n)};
          auto ids = box.enqueue(std::span<const outbox::new_event>(batch));
          if (ids) {
            for (const auto& id : *ids) report(tag::acked, id);
          } else {
            report.fail("batch enqueue failed: " + ids.error().what());
          }
        } else {
          auto id = box.enqueue(make(n));
          if (id) report(tag::acked, *id);
          else report.fail("enqueue failed: " + id.error().what());
        }
        pause(random);
      }
      ::_exit(child_exit::too_long);
    });
  }
  report(tag::ready);
  for (auto& t : producers) t.join();  // not reached: SIGKILL, or a producer's _exit
  return child_exit::too_long;
}

/// The child process: never returns into the test framework.
template <class Open>
[[noreturn]] void child_main(Open& open, reporter report, const workload& load) noexcept {
  int code = child_exit::threw;
  try {
    code = child_life(open, report, load);
  } catch (const std::exception& e) {
    report.fail(std::string("threw: ") + e.what());
  } catch (...) {
    report.fail("threw a non-standard exception");
  }
  ::_exit(code);  // no atexit handlers, no stdio flush of the parent's buffers, no leak check
}

// ---- the parent: one life ------------------------------------------------------------------

/// Threads of this process (Linux: /proc/self/task), or 1 where that cannot be told.
inline int thread_count() {
#ifdef __linux__
  std::error_code ec;
  int n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/task", ec), end; !ec && it != end; it.increment(ec)) ++n;
  return n > 0 ? n : 1;
#else
  return 1;
#endif
}

/// When the parent kills a life.
struct kill_plan {
  std::optional<std::chrono::milliseconds> after{};  ///< nullopt: never (the final life)
  bool from_ready = false;  ///< count from the child's R record instead of from the fork
};

struct life {
  std::vector<record> records;
  bool killed = false;         ///< ended by our SIGKILL
  bool timed_out = false;      ///< killed because it outlived its deadline
  int wait_status = 0;
  std::size_t torn_bytes = 0;  ///< a trailing partial record (never expected: writes are atomic)
  std::chrono::milliseconds lived{};
  std::optional<std::chrono::milliseconds> ready_after{};  ///< when its R record arrived
};

/// Forks a child running `body(reporter)`, reads its records, SIGKILLs it as `plan` says (or
/// after `timeout` if it is still running then), reaps it. The caller must be single-threaded:
/// fork copies only the calling thread.
template <class Body>
life run_life(Body&& body, const kill_plan& plan, std::chrono::milliseconds timeout) {
  if (const int threads = thread_count(); threads > 1)
    throw std::logic_error("outbox_crash::run_life: fork from a process with " + std::to_string(threads) +
                           " threads; the child would inherit locks held by threads it does not have");
  int fds[2];
  if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    ::close(fds[0]);
    body(reporter(fds[1]));
    ::_exit(child_exit::threw);
  }
  ::close(fds[1]);
  // Should reading fail, the child must not outlive the test.
  struct reap_on_throw {
    pid_t pid;
    int fd;
    bool armed = true;
    ~reap_on_throw() {
      if (!armed) return;
      ::kill(pid, SIGKILL);
      int ignored = 0;
      ::waitpid(pid, &ignored, 0);
      ::close(fd);
    }
  } reaper{pid, fds[0]};

  life out;
  const auto start = std::chrono::steady_clock::now();
  const auto give_up = start + timeout;
  auto kill_at = plan.after && !plan.from_ready ? std::min(give_up, start + *plan.after) : give_up;
  std::vector<unsigned char> pending;
  bool eof = false;
  while (!eof) {
    int wait_ms = -1;  // once killed: block until every write end is closed
    if (!out.killed) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= kill_at) {
        ::kill(pid, SIGKILL);
        out.killed = true;
        out.timed_out = now >= give_up;
        out.lived = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
        continue;
      }
      wait_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(kill_at - now).count());
    }
    pollfd p{fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, wait_ms);
    if (ready < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
    if (ready <= 0) continue;
    unsigned char chunk[4096];
    const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "read");
    }
    if (n == 0) {
      eof = true;
      break;
    }
    pending.insert(pending.end(), chunk, chunk + n);
    const std::size_t whole = pending.size() / record_size * record_size;
    for (std::size_t at = 0; at < whole; at += record_size) {
      const record r = decode(pending.data() + at);
      if (r.what != tag::ready) {
        out.records.push_back(r);
        continue;
      }
      const auto now = std::chrono::steady_clock::now();
      out.ready_after = std::chrono::duration_cast<std::chrono::milliseconds>(now - start);
      if (plan.after && plan.from_ready && !out.killed) kill_at = std::min(give_up, now + *plan.after);
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(whole));
  }
  reaper.armed = false;
  ::close(fds[0]);
  out.torn_bytes = pending.size();
  if (!out.killed)
    out.lived = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  while (::waitpid(pid, &out.wait_status, 0) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
  }
  return out;
}

// ---- the parent: what the storage holds -------------------------------------------------------

struct snapshot {
  std::unordered_map<outbox::event_id, outbox::event> events;
  std::vector<outbox::entity_record> entities;  ///< of the steps collection, if the storage keeps entities
};

template <class Storage>
outbox::result<snapshot> take_snapshot(Storage& storage) {
  snapshot s;
  std::uint64_t after = 0;
  for (;;) {
    auto page = storage.query({.status_is = std::nullopt, .user_id = std::nullopt, .limit = 5000, .after_seq = after});
    if (!page) return page.error();
    if (page->empty()) break;
    after = page->back().seq;
    for (auto& e : *page) s.events.emplace(e.id, std::move(e));
  }
  if constexpr (outbox::entity_storage<Storage>) {
    outbox::entity_query q;
    q.collection = std::string(outbox_test::hourly_steps::collection);
    q.limit = 1'000'000;
    auto rows = storage.query_entities(q);
    if (!rows) return rows.error();
    s.entities = std::move(*rows);
  }
  return s;
}

// ---- the parent: the ledger of everything the children reported --------------------------------

struct summary {
  int kills = 0;
  std::size_t acks = 0;               ///< acknowledged writes (a rewrite acknowledges its event again)
  std::size_t acked_events = 0;       ///< distinct acknowledged events
  std::size_t unacked_events = 0;     ///< stored, never acknowledged: the kill fell between commit and return
  std::size_t events = 0;             ///< in the storage at the end
  std::size_t accepted = 0;           ///< S records: hand-overs the backend accepted
  std::size_t refused = 0;            ///< F records
  std::size_t done = 0;               ///< D records
  std::size_t in_flight_at_kills = 0; ///< accepted, outcome not recorded when the kill landed
  int kills_with_delivery_in_flight = 0;
  std::size_t completed_without_callback = 0;  ///< recorded completed, then killed before on_delivered
  std::size_t duplicates = 0;         ///< accepted again after a kill (each was in flight at one)
  std::size_t entities = 0;
  std::vector<std::string> violations;
};

class ledger {
 public:
  explicit ledger(std::size_t max_violations = 200) : max_violations_(max_violations) {}

  /// The records of life `n`, in the order the child wrote them.
  void add_life(int n, const life& l) {
    for (const record& r : l.records) {
      if (r.what == tag::failure) {
        violation("life " + std::to_string(n) + ": the child reported a failure (its stderr says which)");
        continue;
      }
      history& h = ids_[r.id];
      switch (r.what) {
        case tag::acked:
          ++summary_.acks;
          h.acked = true;
          break;
        case tag::accepted:
        case tag::refused:
          ++position_;
          if (h.settled)
            violation("life " + std::to_string(n) + ": " + name(r.id) + " was handed to the transport again after it " +
                      "completed (" + h.settled_how + ")");
          if (h.last_accept_life == n)
            violation("life " + std::to_string(n) + ": " + name(r.id) + " was handed to the transport again in the " +
                      "life whose backend already accepted it (its lease cannot have expired)");
          h.last_sent_life = n;
          if (r.what == tag::accepted) {
            ++summary_.accepted;
            ++h.accepts;
            h.last_accept_life = n;
            h.done_in_last_accept_life = false;
            if (h.first_accept == 0) h.first_accept = position_;
          } else {
            ++summary_.refused;
          }
          break;
        case tag::done:
          ++summary_.done;
          if (h.last_accept_life != n)
            violation("life " + std::to_string(n) + ": on_delivered ran for " + name(r.id) +
                      " without the transport accepting it in that life");
          else if (h.done_in_last_accept_life)
            violation("life " + std::to_string(n) + ": on_delivered ran twice for " + name(r.id));
          h.done_in_last_accept_life = true;
          settle(h, "on_delivered ran in life " + std::to_string(n));
          break;
        default:
          violation("life " + std::to_string(n) + ": unknown record tag " +
                    std::to_string(static_cast<int>(static_cast<unsigned char>(r.what))));
          break;
      }
    }
    if (l.torn_bytes != 0)
      violation("life " + std::to_string(n) + ": " + std::to_string(l.torn_bytes) +
                " trailing bytes of a torn record (pipe writes should be atomic)");
  }

  /// Checks the storage as reopened after life `n`; `final_life` if it ran to the end unkilled.
  void check(int n, const snapshot& s, bool final_life) {
    const std::string after = "after life " + std::to_string(n) + ": ";
    std::size_t in_flight = 0;
    for (auto& [id, h] : ids_) {
      const auto found = s.events.find(id);
      const outbox::event* e = found == s.events.end() ? nullptr : &found->second;
      if (h.acked && !e) violation(after + "acknowledged " + name(id) + " is missing");
      if (h.last_sent_life == n && !e) violation(after + name(id) + " was handed to the transport but is not stored");
      if (h.settled && (!e || e->status != outbox::status::completed))
        violation(after + name(id) + " is " + status_of(e) + " though it completed (" + h.settled_how + ")");
      if (h.last_accept_life == n && !h.done_in_last_accept_life) {
        if (final_life) {
          violation(after + "the backend accepted " + name(id) + " in the final life but on_delivered never ran");
        } else if (e && e->status == outbox::status::completed) {
          ++summary_.completed_without_callback;  // recorded, then killed before the callback
          settle(h, "completed in the storage after life " + std::to_string(n));
        } else if (e && e->status == outbox::status::processing) {
          ++in_flight;  // in flight at the kill: the next life may deliver it again
        } else {
          violation(after + "the backend accepted " + name(id) + " and its outcome was not recorded, yet it is " +
                    status_of(e) + " rather than still processing");
        }
      }
    }
    for (const auto& [id, e] : s.events) {
      if (e.status != outbox::status::completed) {
        if (final_life) violation(after + name(id) + " is " + status_of(&e) + " after the final life drained");
        continue;
      }
      auto it = ids_.find(id);
      if (it == ids_.end() || it->second.accepts == 0) {
        violation(after + name(id) + " is completed though the backend never accepted it");
        continue;
      }
      if (!it->second.settled) settle(it->second, "completed in the storage after life " + std::to_string(n));
    }
    check_entities(after, s);
    if (!final_life) {
      ++summary_.kills;
      summary_.in_flight_at_kills += in_flight;
      summary_.kills_with_delivery_in_flight += in_flight > 0;
    } else {
      check_order(after, s);
      finish(s);
    }
  }

  void violation(std::string what) {
    if (summary_.violations.size() < max_violations_) summary_.violations.push_back(std::move(what));
    else ++dropped_;
  }

  [[nodiscard]] const summary& result() const { return summary_; }
  [[nodiscard]] std::size_t dropped_violations() const { return dropped_; }

 private:
  struct history {
    bool acked = false;
    int accepts = 0;
    int last_sent_life = -1;
    int last_accept_life = -1;
    bool done_in_last_accept_life = false;
    bool settled = false;  ///< known completed: must stay completed, never be handed over again
    std::string settled_how;
    std::uint64_t first_accept = 0;  ///< position of the first acceptance among all hand-overs
  };

  static std::string name(const outbox::event_id& id) { return "event " + id.to_string(); }
  static std::string status_of(const outbox::event* e) {
    return e ? std::string(outbox::to_string(e->status)) : std::string("missing");
  }
  static void settle(history& h, std::string how) {
    if (h.settled) return;
    h.settled = true;
    h.settled_how = std::move(how);
  }

  /// An entity row and its newest event are written in one transaction, and a delivery's
  /// write-back in the transaction that completes the event: after any kill they agree.
  void check_entities(const std::string& after, const snapshot& s) {
    std::unordered_map<std::string, const outbox::entity_record*> by_id;
    for (const auto& row : s.entities) {
      by_id.emplace(row.id, &row);
      const auto found = s.events.find(row.last_event);
      if (row.last_event.is_nil() || found == s.events.end()) {
        violation(after + "entity " + row.id + " names newest event " + row.last_event.to_string() +
                  ", which is not stored");
        continue;
      }
      const outbox::event& e = found->second;
      if (e.entity_id != row.id || e.entity_type != row.collection)
        violation(after + "entity " + row.id + "'s newest event " + e.id.to_string() + " describes " + e.entity_type +
                  "/" + e.entity_id);
      if (e.payload != row.payload)
        violation(after + "entity " + row.id + " holds \"" + row.payload + "\" but its newest event carries \"" +
                  e.payload + "\"");
      if ((row.sync == outbox::sync_status::synced) != (e.status == outbox::status::completed))
        violation(after + "entity " + row.id + " is " + std::string(outbox::to_string(row.sync)) +
                  " while its newest event is " + std::string(outbox::to_string(e.status)));
    }
    if (s.entities.empty()) return;
    for (const auto& [id, e] : s.events) {
      if (e.entity_type.empty()) continue;
      if (!by_id.count(e.entity_id))
        violation(after + name(id) + " describes entity " + e.entity_id + ", which is not stored");
    }
  }

  /// Per ordering key, first deliveries came in append order, kills notwithstanding.
  void check_order(const std::string& after, const snapshot& s) {
    std::map<std::pair<std::string, std::string>, std::vector<const outbox::event*>> lines;
    for (const auto& [id, e] : s.events) lines[{e.user_id, e.ordering_key}].push_back(&e);
    for (auto& [key, line] : lines) {
      std::sort(line.begin(), line.end(), [](const auto* a, const auto* b) { return a->seq < b->seq; });
      std::uint64_t previous = 0;
      for (const auto* e : line) {
        const auto it = ids_.find(e->id);
        const std::uint64_t first = it == ids_.end() ? 0 : it->second.first_accept;
        if (first != 0 && first < previous)
          violation(after + "ordering key " + key.second + ": " + name(e->id) + " (seq " + std::to_string(e->seq) +
                    ") reached the backend before an event appended earlier");
        previous = std::max(previous, first);
      }
    }
  }

  void finish(const snapshot& s) {
    summary_.events = s.events.size();
    summary_.entities = s.entities.size();
    for (const auto& [id, h] : ids_) {
      summary_.acked_events += h.acked;
      if (h.accepts > 1) summary_.duplicates += static_cast<std::size_t>(h.accepts - 1);
    }
    for (const auto& [id, e] : s.events) {
      const auto it = ids_.find(id);
      summary_.unacked_events += it == ids_.end() || !it->second.acked;
    }
  }

  std::unordered_map<outbox::event_id, history> ids_;
  std::uint64_t position_ = 0;
  summary summary_;
  std::size_t max_violations_;
  std::size_t dropped_ = 0;
};

// ---- the whole run ---------------------------------------------------------------------------

struct config {
  std::uint64_t seed = 0;
  int kills = 100;
  std::chrono::milliseconds shortest_life{5};
  std::chrono::milliseconds longest_life{60};
  std::chrono::milliseconds final_timeout{45'000};
  std::chrono::milliseconds life_timeout{20'000};  ///< a killed life that never became ready
  workload load{};
  bool verbose = false;
};

/// The seed (OUTBOX_CRASH_SEED, else random), kill count (OUTBOX_CRASH_KILLS) and per-life
/// output (OUTBOX_CRASH_VERBOSE) from the environment.
inline config config_from_environment() {
  config c;
  if (const char* s = std::getenv("OUTBOX_CRASH_SEED")) c.seed = std::strtoull(s, nullptr, 10);
  else c.seed = (static_cast<std::uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  if (const char* k = std::getenv("OUTBOX_CRASH_KILLS")) c.kills = std::max(1, std::atoi(k));
  c.verbose = std::getenv("OUTBOX_CRASH_VERBOSE") != nullptr;
  return c;
}

/// Runs `config.kills` killed lives and a final one on the storage `open()` opens (in the child,
/// and in the parent after each life to check it). Returns what happened and every violation.
template <class Open>
summary run(Open open, const config& cfg) {
  ledger book;
  std::mt19937_64 random(cfg.seed);
  auto check_storage = [&](int n, bool final_life) {
    auto opened = open();  // closed again before the next fork: one owner at a time
    if (!opened) {
      book.violation("after life " + std::to_string(n) + ": reopening failed: " + opened.error().what());
      return;
    }
    auto taken = take_snapshot(*opened);
    if (!taken) {
      book.violation("after life " + std::to_string(n) + ": reading the storage failed: " + taken.error().what());
      return;
    }
    book.check(n, *taken, final_life);
  };

  for (int n = 0; n <= cfg.kills; ++n) {
    const bool final_life = n == cfg.kills;
    workload load = cfg.load;
    load.seed = cfg.seed ^ (0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(n + 1));
    if (final_life) {
      load.produce = false;
      load.always_deliver = true;
    }
    const auto span = static_cast<std::uint64_t>((cfg.longest_life - cfg.shortest_life).count() + 1);
    kill_plan plan;
    if (!final_life) {
      plan.after = cfg.shortest_life + std::chrono::milliseconds(static_cast<std::int64_t>(random() % span));
      // Most kills count from the moment the child is at work, so they land in saves, claims,
      // sends and recorded outcomes, whatever startup costs (several synced commits, longer
      // under sanitizers). Every fourth counts from the fork and mostly lands in startup: in
      // opening, recovering the journal of the previous kill, or ending the dead leases.
      plan.from_ready = n % 4 != 0;
    }
    const life l = run_life([&](reporter report) { child_main(open, report, load); }, plan,
                            final_life ? cfg.final_timeout : cfg.life_timeout);
    book.add_life(n, l);
    if (final_life) {
      if (l.killed)
        book.violation("the final life did not finish within " + std::to_string(cfg.final_timeout.count()) + " ms");
      else if (!WIFEXITED(l.wait_status) || WEXITSTATUS(l.wait_status) != child_exit::drained)
        book.violation("the final life ended with wait status " + std::to_string(l.wait_status));
    } else if (l.timed_out) {
      book.violation("life " + std::to_string(n) + " never became ready within " +
                     std::to_string(cfg.life_timeout.count()) + " ms");
    } else if (!l.killed) {
      book.violation("life " + std::to_string(n) + " ended by itself before the kill, wait status " +
                     std::to_string(l.wait_status));
    } else if (!WIFSIGNALED(l.wait_status) || WTERMSIG(l.wait_status) != SIGKILL) {
      book.violation("life " + std::to_string(n) + " did not die of SIGKILL, wait status " +
                     std::to_string(l.wait_status));
    }
    check_storage(n, final_life);
    if (cfg.verbose) {
      const auto& s = book.result();
      std::printf("life %3d: %s after %4lld ms (ready after %lld ms, kill planned %lld ms after %s), "
                  "%zu records; so far %zu acks, %zu accepted, %zu done, %zu in flight at kills\n",
                  n, final_life ? "finished" : "killed", static_cast<long long>(l.lived.count()),
                  static_cast<long long>(l.ready_after ? l.ready_after->count() : -1),
                  static_cast<long long>(plan.after ? plan.after->count() : -1),
                  plan.from_ready ? "ready" : "fork", l.records.size(), s.acks, s.accepted, s.done,
                  s.in_flight_at_kills);
    }
  }
  summary out = book.result();
  if (book.dropped_violations() > 0)
    out.violations.push_back("... and " + std::to_string(book.dropped_violations()) + " more violations");
  return out;
}

}  // namespace outbox_crash
