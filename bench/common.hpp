#pragma once
// What the benchmark binaries share: the workload (a pool of producer events spread over 1000
// entities), a transport that accepts everything, the simulated device's sync delay, and the
// harness of the durable rows (batches on the clock with a fresh storage every 100k events, the
// drain's loop, the concurrent savers), each templated over the storage. Each binary pairs these
// with its own baselines.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "outbox/detail/log_format.hpp"
#include "outbox/outbox.hpp"

namespace outbox_bench {

inline constexpr std::size_t payload_bytes = 64;       // a typical small JSON body, past the SSO buffer
inline constexpr std::size_t entity_count = 1000;      // distinct ordering keys: per-key lines matter
inline constexpr std::size_t rebuild_every = 100'000;  // enqueue: start afresh after this many events
inline constexpr std::size_t drain_batch = 100;        // options.batch_size of the drain benchmarks
inline constexpr int default_max_attempts = 5;         // what the outbox stores for a new event
inline const std::string user = "bench-user";
inline const std::string event_type = "steps.saved";

/// Accepts every event at once: the benchmarks time the outbox, not a network.
struct NullTransport {
  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    for (std::size_t i = 0; i < batch.size(); ++i) results[i] = outbox::delivery_result::delivered();
  }
};

inline std::string entity_name(std::size_t i) { return "entity-" + std::to_string(i % entity_count); }

/// 2 * entity_count producer events, entity i % entity_count: any window of up to
/// entity_count of them names distinct entities, consecutive windows continue the rotation.
inline std::vector<outbox::new_event> make_pool() {
  std::vector<outbox::new_event> pool(2 * entity_count);
  for (std::size_t i = 0; i < pool.size(); ++i) {
    pool[i].type = event_type;
    pool[i].entity_id = entity_name(i);
    pool[i].user_id = user;
    pool[i].payload = std::string(payload_bytes, 'x');
  }
  return pool;
}

/// Where the next window of `size` events starts in the pool.
inline std::size_t next_offset(std::size_t offset, std::size_t size) { return (offset + size) % entity_count; }

inline outbox::options drain_options() {
  outbox::options opts;
  opts.batch_size = drain_batch;
  return opts;
}

inline double seconds_between(std::chrono::steady_clock::time_point start, std::chrono::steady_clock::time_point stop) {
  return std::chrono::duration<double>(stop - start).count();
}

/// The simulated device delays the savers rows run with (`device_sync_us:D`), in us added to
/// every sync: `OUTBOX_BENCH_SYNC_US`, a comma-separated list (say `0,50,100,200,400` to find
/// where 8 savers pass 5x one), or `0,1000` when unset or empty: this machine's disk and a 1 ms
/// device. A list that does not parse stops the binary before any row runs, naming the variable.
inline std::vector<int> device_sync_levels() {
  const char* text = std::getenv("OUTBOX_BENCH_SYNC_US");
  std::string_view list = text != nullptr && *text != '\0' ? text : "0,1000";
  std::vector<int> levels;
  while (true) {
    const std::size_t comma = list.find(',');
    const std::string_view item = list.substr(0, comma);
    int us = -1;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), us);
    if (ec != std::errc{} || end != item.data() + item.size() || us < 0 || us > 1'000'000) {
      std::fprintf(stderr, "OUTBOX_BENCH_SYNC_US=\"%s\": want comma-separated delays in us (0-1000000), as 0,1000\n",
                   text != nullptr ? text : "");
      std::exit(2);
    }
    levels.push_back(us);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return levels;
}

/// `->Apply(device_sync_args)`: one `device_sync_us` argument per level of device_sync_levels().
inline void device_sync_args(benchmark::internal::Benchmark* b) {
  b->ArgName("device_sync_us");
  for (const int us : device_sync_levels()) b->Arg(us);
}

// ---- the simulated storage device -------------------------------------------------------------

/// Sleep added after every sync of the binary, in us: 0 is this machine's disk as it is. A
/// phone's flash or a server SSD without a write cache takes 0.5-10 ms to flush, and a sleep
/// costs no CPU, as a device flushing its cache costs none. Each binary routes its syncs, the
/// storage's and the baselines' alike, through device_sync_delay().
inline std::atomic<int> device_sync_delay_us{0};

/// The simulated device's part of one sync: called after the real sync has returned.
inline void device_sync_delay() {
  if (const int us = device_sync_delay_us.load(std::memory_order_relaxed); us > 0)
    std::this_thread::sleep_for(std::chrono::microseconds(us));
}

// ---- durable batches -------------------------------------------------------------------------

/// The loop of the batch rows: per iteration, `measured(offset, step)` on the clock (offset: where
/// this iteration's window of `batch` pool events starts; step: the iteration's index), then
/// `accepted(result)` off it, which skips the row with its error and answers false on failure.
/// `fresh()` starts afresh off the clock, before the first iteration and every rebuild_every
/// events, so the storage (or baseline file) stays between 0 and 100k events.
template <class Fresh, class Measured, class Accepted>
void batches_on_the_clock(benchmark::State& state, Fresh fresh, Measured measured, Accepted accepted) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  if (!fresh()) return;
  std::size_t stored = 0;
  std::size_t offset = 0;
  std::size_t step = 0;
  for (auto _ : state) {
    if (stored >= rebuild_every) {
      if (!fresh()) break;
      stored = 0;
    }
    const auto start = std::chrono::steady_clock::now();
    auto result = measured(offset, step);
    const auto stop = std::chrono::steady_clock::now();
    if (!accepted(result)) break;
    benchmark::DoNotOptimize(result);
    state.SetIterationTime(seconds_between(start, stop));
    stored += batch;
    offset = next_offset(offset, batch);
    ++step;
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

/// Skips the row with `why`; false, so that `ok || skipped(state, why)` reads as the check.
inline bool skipped(benchmark::State& state, const char* why) {
  state.SkipWithError(why);
  return false;
}

/// Skips the row with `r`'s error if it has one; true if it has none.
template <class Result>
bool succeeded(benchmark::State& state, const Result& r) {
  if (r) return true;
  state.SkipWithError(r.error().what().c_str());
  return false;
}

/// Outbox::enqueue(span) of state.range(0) events per iteration, durable on return, timed on
/// its own: the durable enqueue rows. `open_fresh()` puts a new outbox on an empty storage in
/// `box` (false when it could not, having skipped the row).
template <class Box, class OpenFresh>
void enqueue_batches(benchmark::State& state, std::optional<Box>& box, OpenFresh open_fresh) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::vector<outbox::new_event> pool = make_pool();
  batches_on_the_clock(
      state, open_fresh,
      [&](std::size_t offset, std::size_t) {
        return box->enqueue(std::span<const outbox::new_event>(pool.data() + offset, batch));
      },
      [&](const auto& ids) { return succeeded(state, ids); });
}

/// `->Apply(batch_rows)`: the batch rows, 1 to 1000 events per iteration, in manual time.
inline void batch_rows(benchmark::internal::Benchmark* b) {
  b->ArgName("batch")->Arg(1)->Arg(10)->Arg(100)->Arg(1000)->UseManualTime();
}

// ---- drain -----------------------------------------------------------------------------------

/// `->Apply(drain_rows)`: a drain row of `events:N` (given after it), in manual time, in ms.
/// Each iteration fills a fresh storage off the clock, so a row fixes its iteration count
/// rather than growing it to a minimum time.
inline void drain_rows(benchmark::internal::Benchmark* b) {
  b->ArgName("events")->UseManualTime()->Unit(benchmark::kMillisecond);
}

/// process_once() on `box` until a cycle claims nothing, timed: the drain rows. `stop_early()`,
/// asked after each cycle, ends the drain before it is done. Answers the events delivered, or the
/// error a cycle reported.
template <class Box, class StopEarly>
outbox::result<std::size_t> drain(Box& box, StopEarly stop_early, double& seconds) {
  std::size_t delivered = 0;
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const outbox::cycle_report report = box.process_once();
    if (report.error) return *report.error;
    if (report.claimed == 0) break;
    delivered += report.delivered;
    if (stop_early()) break;
  }
  seconds = seconds_between(start, std::chrono::steady_clock::now());
  return delivered;
}

/// A drain still running after this long is stopped and reported as an error row with how far it
/// got, so a per-event cost that grows with the queue cannot stall the whole run.
/// OUTBOX_BENCH_DRAIN_BUDGET_S overrides it; 0 removes the limit.
inline std::chrono::seconds drain_budget() {
  if (const char* value = std::getenv("OUTBOX_BENCH_DRAIN_BUDGET_S")) return std::chrono::seconds(std::atol(value));
  return std::chrono::seconds(30);
}

inline bool over_budget(std::chrono::steady_clock::time_point start) {
  static const std::chrono::seconds budget = drain_budget();
  return budget.count() > 0 && std::chrono::steady_clock::now() - start > budget;
}

inline std::string stopped_message(std::size_t done, std::size_t total, std::chrono::steady_clock::time_point start) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return "stopped after " + std::to_string(static_cast<long>(seconds)) + " s (OUTBOX_BENCH_DRAIN_BUDGET_S) with " +
         std::to_string(done) + " of " + std::to_string(total) + " events drained, " +
         std::to_string(static_cast<long>(seconds * 1e6 / static_cast<double>(std::max<std::size_t>(done, 1)))) +
         " us per event so far";
}

inline void set_drain_counters(benchmark::State& state) {
  const double events = static_cast<double>(state.iterations() * state.range(0));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  // Seconds per event, printed with an SI prefix ("31.2u" is 31.2 us per event).
  state.counters["per_event"] = benchmark::Counter(events, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// ---- concurrent savers ---------------------------------------------------------------------------

/// `->Apply(savers_rows<Setup, Teardown>)`: the savers' rows, at each device delay, with 1 and 8
/// threads, in real time over at least a second; `Setup` opens what the run's threads share,
/// `Teardown` closes it (both run outside the threads).
template <auto Setup, auto Teardown>
void savers_rows(benchmark::internal::Benchmark* b) {
  device_sync_args(b);
  b->Threads(1)->Threads(8)->UseRealTime()->MinTime(1.0)->Setup(Setup)->Teardown(Teardown);
}

/// What a savers run shares across its threads (Setup and Teardown run outside them): the place
/// its storage or baseline lives in (`Place`), and the storage's outbox or the floor.
template <class Place, class Box, class Floor>
struct shared_run {
  static inline std::optional<Place> place;
  static inline std::optional<Box> box;
  static inline std::optional<Floor> floor;

  /// Setup: the row's device delay, then a fresh place.
  static void begin(const benchmark::State& state) {
    device_sync_delay_us = static_cast<int>(state.range(0));
    place.emplace();
  }
  /// Setup of a storage row: a fresh place and `open(place)`'s storage behind an outbox.
  template <auto Open>
  static void open_box(const benchmark::State& state) {
    begin(state);
    auto storage = Open(*place);
    if (storage) box.emplace(std::move(*storage));
  }
  /// Teardown: everything of the run gone, the device back to this machine's disk.
  static void end(const benchmark::State&) {
    box.reset();
    floor.reset();
    place.reset();
    device_sync_delay_us = 0;
  }
};

/// The concurrent savers: each of the run's threads enqueues one event per call into the one
/// shared `box`, each call durable before it returns; total throughput. `counts()` gives the
/// storage's (writes, syncs) so far; thread 0 reports writes per sync as `counter` (1.0: no
/// grouping happened).
template <class Box, class Counts>
void save_one_per_call(benchmark::State& state, std::optional<Box>& shared, const char* counter, Counts counts) {
  if (!shared) {
    state.SkipWithError("setup: could not open the storage");
    return;
  }
  Box& box = *shared;
  const std::vector<outbox::new_event> pool = make_pool();
  std::size_t next = static_cast<std::size_t>(state.thread_index()) * 137;  // threads spread over keys
  std::pair<std::uint64_t, std::uint64_t> before{};
  if (state.thread_index() == 0) before = counts();
  for (auto _ : state) {
    auto id = box.enqueue(pool[next]);
    if (!id) {
      state.SkipWithError(id.error().what().c_str());
      break;
    }
    benchmark::DoNotOptimize(id);
    next = (next + 1) % entity_count;
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    const auto after = counts();
    if (const auto syncs = after.second - before.second; syncs > 0)
      state.counters[counter] = static_cast<double>(after.first - before.first) / static_cast<double>(syncs);
  }
}

// ---- the compact log's bytes: what the file baselines and the floor write -------------------

/// The event the outbox stores for `e` (see Outbox::make_event), with the seq the storage gives it.
inline outbox::event stored_event(const outbox::new_event& e, outbox::event_id id, std::uint64_t seq, outbox::timestamp now) {
  outbox::event out;
  out.id = id;
  out.seq = seq;
  out.type = e.type;
  out.entity_id = e.entity_id;
  out.ordering_key = e.entity_id;
  out.user_id = e.user_id;
  out.payload = e.payload;
  out.status = outbox::status::pending;
  out.max_attempts = default_max_attempts;
  out.created_at = now;
  out.updated_at = now;
  return out;
}

/// One group of the log: the state of each event after `change`, then the commit record.
template <class Change>
std::string log_group(const std::vector<outbox::new_event>& pool, std::size_t offset, std::size_t count,
                      std::uint64_t first_seq, Change&& change) {
  outbox::event_id_generator ids(7);
  const outbox::timestamp now = outbox::system_clock{}.now();
  std::string bytes;
  for (std::size_t i = 0; i < count; ++i) {
    outbox::event e = stored_event(pool[(offset + i) % pool.size()], ids.next(now), first_seq + i, now);
    change(e, now);
    outbox::detail::log::put_event(bytes, e);
  }
  outbox::detail::log::put_marker(bytes, outbox::detail::log::record_type::commit, first_seq + count);
  return bytes;
}

/// The groups `append` logs for batches of `batch` new events taken from the pool as the
/// enqueue benchmarks take them (consecutive windows, entity ids in rotation), until the
/// rotation comes back to its start: the same bytes, in the same sizes, as the outbox writes.
inline std::vector<std::string> append_groups(const std::vector<outbox::new_event>& pool, std::size_t batch) {
  std::vector<std::string> groups;
  std::size_t offset = 0;
  std::uint64_t seq = 1;
  do {
    groups.push_back(log_group(pool, offset, batch, seq, [](outbox::event&, outbox::timestamp) {}));
    seq += batch;
    offset = next_offset(offset, batch);
  } while (offset != 0);
  return groups;
}

// ---- the floor of group commit ---------------------------------------------------------------

/// The floor under every grouped, per-call durable save on this machine: the savers' handshake
/// and the disk, and nothing else. A caller hands over its bytes and returns once a write and
/// `Sync` covering them have returned. The first caller to find no flush running leads one,
/// after waiting for as many callers as the last flush carried, for at most half that flush's
/// time and never over 250 us: file_storage's rule (sqlite_storage's caps the wait at 200 us).
/// No ids, no encoding, no index, no transaction: what a storage does beyond this is the gap
/// between its savers rows and these. The floor's own 8-thread / 1-thread ratio is about what
/// any storage grouping this way can reach on the machine.
///
/// The handshake is the plain one: a mutex, two condition variables, the first free caller
/// leads. Per-caller futexes, wake-ups in a tree or a leader chosen as the last to arrive gain at
/// most about 10 % with 4 us of work per save and nothing with none: on 2 vCPUs, waking 7
/// blocked threads that each then do 4 us of work takes 46-60 us however they are woken, as the
/// woken threads queue on one vCPU.
///
/// The log cycles over one MiB zeroed ahead, as a preallocated segment is overwritten.
template <class Sync>
class group_commit_floor {
 public:
  group_commit_floor(const std::filesystem::path& file, Sync sync) : sync_(sync) {
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const std::string zeros(region, '\0');
    ok_ = fd_ >= 0 && ::pwrite(fd_, zeros.data(), zeros.size(), 0) == static_cast<ssize_t>(zeros.size()) &&
          ::fsync(fd_) == 0;
  }
  group_commit_floor(const group_commit_floor&) = delete;
  group_commit_floor& operator=(const group_commit_floor&) = delete;
  ~group_commit_floor() {
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] bool ok() const noexcept { return ok_; }
  [[nodiscard]] std::uint64_t flushes() {
    std::lock_guard lock(mutex_);
    return flushes_;
  }

  /// Returns once `bytes` are written and synced; false if a write or sync failed.
  bool save(std::string_view bytes) {
    std::unique_lock lock(mutex_);
    pending_.append(bytes);
    const std::uint64_t ticket = ++queued_;
    if (gathering_ && queued_ - taken_ >= last_calls_) gather_cv_.notify_one();
    while (durable_ < ticket) {
      if (!ok_) return false;
      if (flushing_) {
        done_cv_.wait(lock);
        continue;
      }
      flushing_ = true;
      if (queued_ - taken_ < last_calls_) {
        const auto limit = std::min<std::chrono::nanoseconds>(last_time_ / 2, std::chrono::microseconds(250));
        gathering_ = true;
        gather_cv_.wait_for(lock, limit, [&] { return queued_ - taken_ >= last_calls_; });
        gathering_ = false;
      }
      std::string batch;
      batch.swap(pending_);
      const std::uint64_t calls = queued_ - taken_;
      const std::uint64_t upto = taken_ = queued_;  // one flush at a time: all before it are durable
      off_t at = offset_;
      if (at + static_cast<off_t>(batch.size()) > static_cast<off_t>(region)) at = 0;
      offset_ = at + static_cast<off_t>(batch.size());
      lock.unlock();
      const auto started = std::chrono::steady_clock::now();
      const bool written = ::pwrite(fd_, batch.data(), batch.size(), at) == static_cast<ssize_t>(batch.size()) &&
                           sync_(fd_) == 0;
      const auto took = std::chrono::steady_clock::now() - started;
      lock.lock();
      flushing_ = false;
      if (written) {
        durable_ = upto;
        ++flushes_;
        last_calls_ = calls;
        last_time_ = took;
      } else {
        ok_ = false;
      }
      done_cv_.notify_all();
    }
    return true;
  }

 private:
  static constexpr std::size_t region = 1 << 20;
  Sync sync_;
  int fd_ = -1;
  bool ok_ = false;
  std::mutex mutex_;
  std::condition_variable done_cv_, gather_cv_;
  std::string pending_;
  std::uint64_t queued_ = 0, taken_ = 0, durable_ = 0, flushes_ = 0, last_calls_ = 0;
  bool flushing_ = false, gathering_ = false;
  std::chrono::nanoseconds last_time_{0};
  off_t offset_ = 0;
};

/// The savers' loop over a group_commit_floor: each thread saves one event's group of the
/// compact log per call, cycling through the pool's entities; thread 0 reports calls per sync as
/// `saves_per_sync`.
template <class Floor>
void floor_one_per_call(benchmark::State& state, std::optional<Floor>& shared) {
  if (!shared || !shared->ok()) {
    state.SkipWithError("setup: could not open the floor's file");
    return;
  }
  static const std::vector<std::string> records = append_groups(make_pool(), 1);
  Floor& floor = *shared;
  std::size_t next = static_cast<std::size_t>(state.thread_index()) * 137;  // as the savers do
  std::uint64_t before = 0;
  if (state.thread_index() == 0) before = floor.flushes();
  for (auto _ : state) {
    if (!floor.save(records[next])) {
      state.SkipWithError("write or sync failed");
      break;
    }
    next = (next + 1) % records.size();
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    if (const auto syncs = floor.flushes() - before; syncs > 0)
      state.counters["saves_per_sync"] =
          static_cast<double>(state.iterations() * static_cast<std::uint64_t>(state.threads())) / static_cast<double>(syncs);
  }
}

}  // namespace outbox_bench
