/// \file
/// Google Benchmark bodies for `outbox::file_storage` behind `outbox::Outbox`, each next to a
/// raw `write` + `fdatasync` of the same bytes (`BM_baseline_*`), in the same binary: this
/// machine varies 10-25 % from run to run, so bench/README.md reports ratios, not absolute
/// figures.
///
///     BM_file_storage_enqueue/batch:N               Outbox::enqueue(span) of N events, durable (sync group)
///     BM_baseline_write_fdatasync/batch:N           write() the bytes the storage logs for N events, fdatasync
///     BM_baseline_prealloc_write_fdatasync/batch:N  the same, written over zeros already on disk: the floor
///     BM_file_storage_drain/events:N                process_once() until empty, batches of 100
///     BM_baseline_file_drain/events:N               per 100 events: write+fdatasync the claim group, then the record group
///     BM_file_storage_open/completed:C/pending:P    file_storage::open of a compacted log of C completed and P pending events
///     BM_baseline_read_log/completed:C/pending:P    read the same segment files and check every record's checksum
///     BM_file_storage_savers/device_sync_us:D/threads:T              T threads, enqueue(one event) each call, durable on return
///     BM_baseline_write_fdatasync_savers/device_sync_us:D/threads:T  T threads, write+fdatasync of one event's group each, one O_APPEND file
///     BM_baseline_group_commit_savers/device_sync_us:D/threads:T     T threads, the same groups through the bare group-commit handshake: the floor
///
/// The savers rows run on this machine's own disk (D = 0) and on a simulated device (D = 1000):
/// every `fdatasync` of the binary, the storage's and the baseline's alike, sleeps D us after
/// the real one returns (see `device` below). `OUTBOX_BENCH_SYNC_US=0,50,100` runs them at
/// those delays instead.
///
/// The baselines write exactly what the storage writes: records framed and checksummed by
/// `outbox::detail::log` from events built as the outbox builds them, a commit record closing
/// each group (the `log_bytes_per_event` counters of a row and its baseline agree). They are
/// serialised before the clock starts: the baseline is the disk, the outbox is everything else.
///
/// Every storage is a fresh directory in the temporary directory (TMPDIR), removed afterwards.
/// It must be on a real disk: on tmpfs a sync costs nothing and the figures mean little. The
/// ratios depend on what a sync costs: `BM_baseline_write_fdatasync/batch:1` is that cost, and
/// when the disk is throttled (milliseconds per sync) every ratio drifts towards 1.
///
/// Disk-bound: every row is timed in real time (manual time around the measured call where the
/// loop also does untimed setup), never in CPU time, which would leave out the syncs. Each row is
/// registered right after its body; the harness they share is bench/common.hpp.

#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "outbox/detail/file_log.hpp"
#include "outbox/detail/log_format.hpp"
#include "outbox/outbox.hpp"
#include "outbox/storage/file.hpp"
#include "common.hpp"

// ---- a simulated storage device --------------------------------------------------------------

/// This binary's fdatasync: the C library's, then the simulated device's delay
/// (outbox_bench::device_sync_delay). It replaces the library's for every call made from this
/// executable (the storage's header code is compiled into it). Concurrent calls sleep side by
/// side, as if the device served them with one flush: the storage never has two syncs in
/// flight, but the savers baseline's threads do, and get that merging for free.
extern "C" int fdatasync(int fd) {
  using sync_fn = int (*)(int);
  static const auto real = reinterpret_cast<sync_fn>(::dlsym(RTLD_NEXT, "fdatasync"));
  const int rc = real(fd);
  outbox_bench::device_sync_delay();
  return rc;
}

namespace {

using namespace outbox_bench;

constexpr std::size_t fill_batch = 1000;  // events per enqueue when filling for a drain

using file_outbox = outbox::Outbox<outbox::file_storage, NullTransport>;

/// A directory of its own in the temporary directory, removed with everything in it when this
/// goes away. Destroy the storage using it first.
class temp_directory {
 public:
  temp_directory() {
    static std::atomic<unsigned> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("outbox-bench-file-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
    std::filesystem::create_directories(path_, ignored);
  }
  temp_directory(const temp_directory&) = delete;
  temp_directory& operator=(const temp_directory&) = delete;
  ~temp_directory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// fsyncs every file in `dir`: what a fill written with sync_policy::none left in the page
/// cache must not be flushed by the first sync on the clock.
void sync_directory_files(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const int file = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (file < 0) continue;
    ::fsync(file);
    ::close(file);
  }
  const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d >= 0) {
    ::fsync(d);
    ::close(d);
  }
}

/// Bytes of records in the segment files of `dir`: their sizes less their headers.
std::uint64_t logged_bytes_in(const std::filesystem::path& dir) {
  std::uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".log") continue;
    const auto size = entry.file_size(ec);
    if (!ec && size > outbox::detail::log::header_size) bytes += size - outbox::detail::log::header_size;
  }
  return bytes;
}

// ---- the baselines' bytes ----------------------------------------------------------------------

double mean_bytes_per_event(const std::vector<std::string>& groups, std::size_t batch) {
  std::size_t bytes = 0;
  for (const auto& g : groups) bytes += g.size();
  return static_cast<double>(bytes) / static_cast<double>(groups.size() * batch);
}

/// The group `claim` logs: each event processing, under a lease, one attempt started.
std::string claim_group(const std::vector<outbox::new_event>& pool, std::size_t count) {
  return log_group(pool, 0, count, 1, [](outbox::event& e, outbox::timestamp now) {
    e.status = outbox::status::processing;
    e.attempts = 1;
    e.lease = 0x1234'5678'9ABC'DEF0ULL;
    e.lease_until = now + std::chrono::minutes(2);
    e.updated_at = now;
  });
}

/// The group `record` logs: each event completed.
std::string record_group(const std::vector<outbox::new_event>& pool, std::size_t count) {
  return log_group(pool, 0, count, 1, [](outbox::event& e, outbox::timestamp now) {
    e.status = outbox::status::completed;
    e.attempts = 1;
    e.updated_at = now;
    e.completed_at = now;
  });
}

/// A file opened as the storage opens its active segment; removed when this goes away.
class append_file {
 public:
  explicit append_file(const std::filesystem::path& path) : path_(path) {
    file_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  }
  append_file(const append_file&) = delete;
  append_file& operator=(const append_file&) = delete;
  ~append_file() {
    if (file_ >= 0) ::close(file_);
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }

  [[nodiscard]] bool ok() const noexcept { return file_ >= 0; }

  /// write() until all of `bytes` is written, then fdatasync: what the storage does per flush.
  [[nodiscard]] bool write_and_sync(std::string_view bytes) const {
    while (!bytes.empty()) {
      const ssize_t n = ::write(file_, bytes.data(), bytes.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return ::fdatasync(file_) == 0;
  }

 private:
  std::filesystem::path path_;
  int file_ = -1;
};

// ---- durable enqueue ---------------------------------------------------------------------------

void BM_file_storage_enqueue(benchmark::State& state) {
  std::optional<file_outbox> box;
  std::optional<temp_directory> dir;
  std::uint64_t logged_bytes = 0;  // records written by the storages of this run
  auto retire = [&] {
    box.reset();
    if (dir) logged_bytes += logged_bytes_in(dir->path());
    dir.reset();
  };
  enqueue_batches(state, box, [&]() -> bool {
    retire();
    dir.emplace();
    auto storage = outbox::file_storage::open(dir->path());  // the default: sync_policy::group
    if (!succeeded(state, storage)) return false;
    box.emplace(std::move(*storage));
    return true;
  });
  retire();
  const auto events = static_cast<double>(state.iterations()) * static_cast<double>(state.range(0));
  if (events > 0) state.counters["log_bytes_per_event"] = static_cast<double>(logged_bytes) / events;
}
BENCHMARK(BM_file_storage_enqueue)->Apply(outbox_bench::batch_rows);

/// The bytes `append` logs for N events (N event records and a commit record, serialised off
/// the clock), written to a file opened O_APPEND, then fdatasync. Restarted at the same cadence.
void BM_baseline_write_fdatasync(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::vector<std::string> groups = append_groups(make_pool(), batch);
  std::optional<append_file> file;
  std::optional<temp_directory> dir;
  auto fresh_file = [&] {
    file.reset();
    dir.emplace();  // the old directory goes first, with the file in it
    file.emplace(dir->path() / "baseline.log");
    return file->ok() || skipped(state, "setup: could not open the baseline file");
  };
  batches_on_the_clock(
      state, fresh_file,
      [&](std::size_t, std::size_t step) { return file->write_and_sync(groups[step % groups.size()]); },
      [&](bool written) { return written || skipped(state, "write or fdatasync failed"); });
  file.reset();
  state.counters["log_bytes_per_event"] = mean_bytes_per_event(groups, batch);
}
BENCHMARK(BM_baseline_write_fdatasync)->Apply(outbox_bench::batch_rows);

/// The same bytes written over zeros already on disk (a file zero-filled and synced off the
/// clock, as far as the run will write), then fdatasync: the floor for a storage that
/// preallocates, because neither the file's size nor its block map changes. The storage pays for
/// its zeros on the clock (a chunk with every file_options::preallocate_bytes of log); this
/// baseline does not, so it shows how close to the disk the storage gets.
void BM_baseline_prealloc_write_fdatasync(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::vector<std::string> groups = append_groups(make_pool(), batch);
  std::size_t largest = 0;
  for (const auto& g : groups) largest = std::max(largest, g.size());
  const std::size_t span = (rebuild_every / batch + 1) * largest;  // what one file takes, at most
  std::optional<temp_directory> dir;
  int file = -1;
  off_t offset = 0;
  auto zero_filled = [&]() -> bool {
    if (file >= 0) ::close(file);
    dir.reset();
    dir.emplace();
    offset = 0;
    file = ::open((dir->path() / "baseline.log").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const std::string zeros(1 << 20, '\0');
    for (std::size_t done = 0; file >= 0 && done < span; done += zeros.size())
      if (::write(file, zeros.data(), zeros.size()) != static_cast<ssize_t>(zeros.size())) return false;
    return file >= 0 && ::fsync(file) == 0;
  };
  batches_on_the_clock(
      state, [&] { return zero_filled() || skipped(state, "setup: could not zero-fill the baseline file"); },
      [&](std::size_t, std::size_t step) -> std::size_t {  // the bytes written, 0 if it failed
        const std::string& bytes = groups[step % groups.size()];
        const bool written = ::pwrite(file, bytes.data(), bytes.size(), offset) == static_cast<ssize_t>(bytes.size()) &&
                             ::fdatasync(file) == 0;
        return written ? bytes.size() : 0;
      },
      [&](std::size_t written) {
        offset += static_cast<off_t>(written);
        return written > 0 || skipped(state, "pwrite or fdatasync failed");
      });
  if (file >= 0) ::close(file);
  state.counters["log_bytes_per_event"] = mean_bytes_per_event(groups, batch);
}
BENCHMARK(BM_baseline_prealloc_write_fdatasync)->Apply(outbox_bench::batch_rows);

// ---- drain -------------------------------------------------------------------------------------

/// Off the clock: `total` events written with sync_policy::none in batches of 1000 and synced to
/// disk, then the storage reopened (replayed) with the default policy behind a drain outbox.
bool prepare_drain(std::optional<file_outbox>& box, const temp_directory& dir,
                   const std::vector<outbox::new_event>& pool, std::size_t total, benchmark::State& state) {
  {
    outbox::file_options fast;
    fast.sync = outbox::file_options::sync_policy::none;
    auto storage = outbox::file_storage::open(dir.path(), fast);
    if (!storage) {
      state.SkipWithError(storage.error().what().c_str());
      return false;
    }
    file_outbox filler(std::move(*storage));
    for (std::size_t done = 0; done < total; done += fill_batch) {
      const std::size_t n = std::min(fill_batch, total - done);
      if (!filler.enqueue(std::span<const outbox::new_event>(pool.data(), n))) {
        state.SkipWithError("setup: enqueue failed");
        return false;
      }
    }
  }
  sync_directory_files(dir.path());
  auto storage = outbox::file_storage::open(dir.path());
  if (!storage) {
    state.SkipWithError(storage.error().what().c_str());
    return false;
  }
  box.emplace(std::move(*storage), drain_options());
  box->set_user(user);
  return true;
}

void BM_file_storage_drain(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  const std::vector<outbox::new_event> pool = make_pool();
  std::uint64_t syncs = 0;
  std::uint64_t compactions = 0;
  for (auto _ : state) {
    std::optional<file_outbox> box;
    temp_directory dir;
    if (!prepare_drain(box, dir, pool, total, state)) break;
    const auto before = box->storage().disk_usage();
    double seconds = 0;
    const auto delivered = drain(*box, [] { return false; }, seconds);
    const auto after = box->storage().disk_usage();
    syncs += after.syncs - before.syncs;
    compactions += after.compactions - before.compactions;
    if (!succeeded(state, delivered)) break;
    if (*delivered != total) {
      state.SkipWithError("the drain did not deliver every event");
      break;
    }
    state.SetIterationTime(seconds);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  const auto iterations = static_cast<double>(state.iterations());
  if (iterations > 0) {
    state.counters["syncs"] = static_cast<double>(syncs) / iterations;
    state.counters["compactions"] = static_cast<double>(compactions) / iterations;
  }
}
BENCHMARK(BM_file_storage_drain)->Apply(outbox_bench::drain_rows)->Arg(10'000)->Iterations(5);
BENCHMARK(BM_file_storage_drain)->Apply(outbox_bench::drain_rows)->Arg(100'000)->Iterations(1);

/// What the drain must write at the least: per batch of 100, the claim group (100 events now
/// processing, a commit record), fdatasync, then the record group (100 events now completed, a
/// commit record), fdatasync. Serialised off the clock; a fresh file per iteration.
void BM_baseline_file_drain(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  const std::vector<outbox::new_event> pool = make_pool();
  const std::string claimed = claim_group(pool, drain_batch);
  const std::string recorded = record_group(pool, drain_batch);
  for (auto _ : state) {
    temp_directory dir;
    append_file file(dir.path() / "baseline.log");
    if (!file.ok()) {
      state.SkipWithError("setup: could not open the baseline file");
      break;
    }
    bool ok = true;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t done = 0; done < total && ok; done += drain_batch)
      ok = file.write_and_sync(claimed) && file.write_and_sync(recorded);
    const auto stop = std::chrono::steady_clock::now();
    if (!ok) {
      state.SkipWithError("write or fdatasync failed");
      break;
    }
    state.SetIterationTime(seconds_between(start, stop));
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["syncs"] = static_cast<double>(2 * ((total + drain_batch - 1) / drain_batch));
}
BENCHMARK(BM_baseline_file_drain)->Apply(outbox_bench::drain_rows)->Arg(10'000)->Iterations(5);
BENCHMARK(BM_baseline_file_drain)->Apply(outbox_bench::drain_rows)->Arg(100'000)->Iterations(1);

// ---- open -------------------------------------------------------------------------------------

/// A directory holding what compaction leaves after `completed` deliveries with `pending` events
/// still queued: one segment, a snapshot of every retained event (the completed ones, then the
/// pending ones, entity ids in rotation), as the storage writes it. Built once per row, off the
/// clock, synced; removed with the directory.
bool write_compacted_log(const temp_directory& dir, std::size_t completed, std::size_t pending) {
  namespace log = outbox::detail::log;
  const std::vector<outbox::new_event> pool = make_pool();
  outbox::event_id_generator ids(11);
  const outbox::timestamp now = outbox::system_clock{}.now();
  const std::size_t total = completed + pending;
  std::string bytes = log::segment_header();
  log::put_marker(bytes, log::record_type::snapshot, total + 1);
  for (std::size_t i = 0; i < total; ++i) {
    outbox::event e = stored_event(pool[i % pool.size()], ids.next(now), i + 1, now);
    if (i < completed) {
      e.status = outbox::status::completed;
      e.attempts = 1;
      e.completed_at = now;
      e.remote_id = "remote-" + std::to_string(i);
    }
    log::put_event(bytes, e);
  }
  log::put_marker(bytes, log::record_type::commit, total + 1);
  const auto path = dir.path() / outbox::detail::file::segment_name(1);
  const int file = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (file < 0) return false;
  outbox::detail::file::posix_io io;
  const bool whole = outbox::detail::file::put_at(io, file, bytes, 0);
  ::close(file);
  sync_directory_files(dir.path());
  return whole;
}

void open_rows(benchmark::internal::Benchmark* b) {
  b->ArgNames({"completed", "pending"})->Args({1'000'000, 1'000})->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
}

/// file_storage::open of the compacted log: list, read and check the segments, rebuild the
/// index. The storage's destructor runs off the clock. The target: proportional to the live
/// (pending) events, not to the completed ones the log retains for queries until purged.
void BM_file_storage_open(benchmark::State& state) {
  temp_directory dir;
  if (!write_compacted_log(dir, static_cast<std::size_t>(state.range(0)), static_cast<std::size_t>(state.range(1)))) {
    state.SkipWithError("setup: could not write the log");
    return;
  }
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto storage = outbox::file_storage::open(dir.path());
    const auto stop = std::chrono::steady_clock::now();
    if (!succeeded(state, storage)) break;
    state.SetIterationTime(seconds_between(start, stop));
  }
  state.SetItemsProcessed(state.iterations() * (state.range(0) + state.range(1)));  // retained events opened
  state.counters["log_bytes"] = static_cast<double>(logged_bytes_in(dir.path()));
}
BENCHMARK(BM_file_storage_open)->Apply(open_rows);

/// Reads the same segment files and checks each record's frame and checksum: the floor of any
/// open that reads its whole log.
void BM_baseline_read_log(benchmark::State& state) {
  temp_directory dir;
  if (!write_compacted_log(dir, static_cast<std::size_t>(state.range(0)), static_cast<std::size_t>(state.range(1)))) {
    state.SkipWithError("setup: could not write the log");
    return;
  }
  const auto path = dir.path() / outbox::detail::file::segment_name(1);
  outbox::detail::file::posix_io io;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto bytes = outbox::detail::file::read_file(io, path);
    std::size_t records = 0;
    std::size_t pos = outbox::detail::log::header_size;
    while (bytes) {
      const auto end = outbox::detail::log::frame_end(*bytes, pos);
      if (!end) break;
      pos = *end;
      ++records;
    }
    const auto stop = std::chrono::steady_clock::now();
    if (!bytes || pos != bytes->size()) {
      state.SkipWithError("the log did not read whole");
      break;
    }
    benchmark::DoNotOptimize(records);
    state.SetIterationTime(seconds_between(start, stop));
  }
  state.SetItemsProcessed(state.iterations() * (state.range(0) + state.range(1)));
}
BENCHMARK(BM_baseline_read_log)->Apply(open_rows);

// ---- concurrent savers -------------------------------------------------------------------------

using fdatasync_fn = int (*)(int);
/// One directory per run, holding the storage, the baseline's file or the floor's.
using file_run = shared_run<temp_directory, file_outbox, group_commit_floor<fdatasync_fn>>;
std::optional<append_file> shared_file;

outbox::result<outbox::file_storage> open_file_storage(const temp_directory& dir) {
  return outbox::file_storage::open(dir.path());
}
void open_shared_file(const benchmark::State& state) {
  file_run::begin(state);
  shared_file.emplace(file_run::place->path() / "baseline.log");
}
void open_shared_floor(const benchmark::State& state) {
  file_run::begin(state);
  file_run::floor.emplace(file_run::place->path() / "floor.log", &::fdatasync);  // the device's, above
}
void close_shared(const benchmark::State& state) {
  shared_file.reset();
  file_run::end(state);
}

/// Each thread saves one event per call, durable before the call returns (sync_policy::group);
/// total throughput. Concurrent calls share a write and its fdatasync (group commit).
void BM_file_storage_savers(benchmark::State& state) {
  save_one_per_call(state, file_run::box, "saves_per_sync", [] {
    const auto usage = file_run::box->storage().disk_usage();
    return std::pair{usage.writes, usage.syncs};
  });
}
BENCHMARK(BM_file_storage_savers)
    ->Apply(outbox_bench::savers_rows<file_run::open_box<&open_file_storage>, close_shared>);

/// The same without group commit: each thread writes one event's group (the event record and
/// a commit record) to one shared O_APPEND file and calls fdatasync itself.
void BM_baseline_write_fdatasync_savers(benchmark::State& state) {
  if (!shared_file || !shared_file->ok()) {
    state.SkipWithError("setup: could not open the baseline file");
    return;
  }
  const std::vector<std::string> groups = append_groups(make_pool(), 1);
  std::size_t next = static_cast<std::size_t>(state.thread_index()) * 137;  // as the savers do
  for (auto _ : state) {
    if (!shared_file->write_and_sync(groups[next])) {
      state.SkipWithError("write or fdatasync failed");
      break;
    }
    next = (next + 1) % groups.size();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_baseline_write_fdatasync_savers)
    ->Apply(outbox_bench::savers_rows<open_shared_file, close_shared>);

/// The savers' floor: the same groups, grouped by the bare handshake of group commit, with none
/// of the storage's work (see outbox_bench::group_commit_floor). Its 8/1 ratio is about what
/// this machine allows a storage that groups this way; the storage's 8-thread row over this one's
/// is how much of it the storage keeps.
void BM_baseline_group_commit_savers(benchmark::State& state) { floor_one_per_call(state, file_run::floor); }
BENCHMARK(BM_baseline_group_commit_savers)->Apply(outbox_bench::savers_rows<open_shared_floor, close_shared>);

}  // namespace

BENCHMARK_MAIN();
