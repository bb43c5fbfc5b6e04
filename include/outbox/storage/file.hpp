#pragma once
/// \file
/// `outbox::file_storage`: a crash-safe, append-only log in one directory, needing nothing but
/// the standard library and POSIX. For hosts that cannot or will not link SQLite.
///
///     auto storage = outbox::file_storage::open("/var/lib/app/outbox").value();
///
/// Every operation that changes state appends one group of checksummed records (the new state
/// of each event and entity it touched, then a commit record) to the active segment file, and
/// returns once the group is durable under the sync policy. Opening replays the segments into the
/// same in-memory index `memory_storage` uses, so claim order and per-key rules are identical.
///
/// Durability (`file_options::sync`): `group` (default) and `every_commit` return after
/// `fdatasync`, so nothing acknowledged is lost on power loss; `group` lets concurrent callers
/// share one sync (the caller leading a sync first waits, at most min(last sync / 2, 250 us), for
/// as many callers as the last sync served). `none` returns after `write`: safe from a process
/// crash (`kill -9`), not from power loss.
///
/// Preallocation (`file_options::preallocate_bytes`): the active segment is kept zero-filled
/// some way past the log's end, and records overwrite those zeros in place. A sync of data
/// written into blocks the file already has flushes only that data: the file's size and block
/// map do not change, so the file system has no metadata to commit with it. Appending past the
/// end instead changes the size on every write, and every `fdatasync` then commits metadata
/// too. The zeros are written a chunk at a time, with the data that needed them and under the
/// same sync. A zero tail is not a record (a record's length is never 0): opening reads it as
/// free space, a sealed segment is cut back to its last record, and so is the active one when
/// the storage closes.
///
/// An append of `overlap_min_events` or more logs its events, hands their indexing to a helper
/// thread (one per storage, started on first use) and writes and syncs them itself meanwhile;
/// it returns once they are both synced and indexed. Until the helper is done, every other
/// operation waits, so none sees memory and log disagree.
///
/// Recovery: a torn tail (a crash mid-write) is truncated back to the last whole group and
/// reported in `recovery()`. An unreadable record followed by readable ones is corruption:
/// opening fails with `errc::corrupt_data` naming the file and offset, unless
/// `file_options::salvage` asks to skip unreadable stretches (the groups they interrupt are
/// dropped) and keep every readable group.
///
/// Compaction: once superseded records outweigh live ones (and pass a floor), the live state is
/// written to a new segment, synced, renamed into place and the directory synced, then the old
/// segments are deleted. A crash at any step leaves either the old or the new state.
///
/// One process owns a directory at a time (`flock` on `LOCK`); files are created 0600.
/// After a failed write or sync the storage refuses further work (`errc::disk_full` when the
/// disk, a quota or the file size limit had no room, else `errc::io_error`): the state of the
/// file is unknown, so reopen it, which recovers from what is on disk.
///
/// A full disk: preallocation is best effort (the zeros that fit, so records fill the disk to
/// its end), and a compaction or a new segment that does not fit is given up before it changes
/// anything, its temporary file removed; the storage goes on and counts it in
/// `usage::failed_maintenance`. A compaction first cuts the active segment's zeros, whose room
/// the snapshot may need.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "outbox/detail/log_format.hpp"
#include "outbox/detail/seq_sizes.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/memory.hpp"

namespace outbox {

struct file_options {
  enum class sync_policy : std::uint8_t {
    group,         ///< fdatasync before returning; concurrent callers share one (default)
    every_commit,  ///< one fdatasync per operation
    none,          ///< write() only: survives a process crash, not power loss
  };
  sync_policy sync = sync_policy::group;
  bool salvage = false;                            ///< open past corruption, dropping what it hides
  std::uint64_t segment_bytes = 64ULL << 20;       ///< start a new segment beyond this size
  std::uint64_t preallocate_bytes = 1ULL << 20;    ///< zeros kept ahead of the log's end (0: none; unused under sync none)
  std::uint64_t compact_min_dead_bytes = 4ULL << 20;  ///< never compact for less garbage than this
  double compact_dead_ratio = 1.0;                 ///< compact when dead bytes exceed live bytes times this
};

/// What opening found and did.
struct file_recovery {
  std::uint64_t groups_replayed = 0;
  std::uint64_t torn_bytes_truncated = 0;  ///< bytes of an incomplete last group, cut off
  std::string torn_file;                   ///< where, if any
  std::uint64_t salvaged_skips = 0;        ///< unreadable stretches skipped (salvage only)
  std::vector<std::string> notes;          ///< human-readable account of the above
};

namespace detail::file {

/// An OS failure as a typed error naming the file. No space (ENOSPC), a quota (EDQUOT) and a file
/// size limit (EFBIG: RLIMIT_FSIZE, or the file system's largest file) are all disk_full: the
/// write did not fit, and room must be made before writing again.
inline outbox::error os_error(std::string_view what, const std::filesystem::path& path, int err = errno) {
  const errc code = err == ENOSPC || err == EDQUOT || err == EFBIG ? errc::disk_full : errc::io_error;
  return outbox::error(code, std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

/// A file descriptor that closes itself.
class fd {
 public:
  fd() = default;
  explicit fd(int value) : value_(value) {}
  fd(fd&& other) noexcept : value_(std::exchange(other.value_, -1)) {}
  fd& operator=(fd&& other) noexcept {
    if (this != &other) {
      reset();
      value_ = std::exchange(other.value_, -1);
    }
    return *this;
  }
  fd(const fd&) = delete;
  fd& operator=(const fd&) = delete;
  ~fd() { reset(); }
  void reset() noexcept {
    if (value_ >= 0) ::close(value_);
    value_ = -1;
  }
  [[nodiscard]] int get() const noexcept { return value_; }
  explicit operator bool() const noexcept { return value_ >= 0; }

 private:
  int value_ = -1;
};

/// Writes all of `data` at `offset`: false if it stopped short (errno says why). `*written`
/// is how far it got.
inline bool put_at(int file, std::string_view data, std::uint64_t offset, std::uint64_t* written = nullptr) {
  std::uint64_t done = 0;
  bool whole = true;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(file, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      whole = false;
      break;
    }
    done += static_cast<std::uint64_t>(n);
  }
  if (written) *written = done;
  return whole;
}

/// Writes `bytes` at `offset`.
inline result<void> write_at(int file, std::string_view bytes, std::uint64_t offset, const std::filesystem::path& path) {
  if (!put_at(file, bytes, offset)) return os_error("writing", path);
  return {};
}

/// Writes up to `zeros` zero bytes at `offset` and returns how many it wrote. Preallocation is
/// an optimisation, so it never fails: on a full disk it stops where the room ends, and a real
/// I/O error shows in the sync that follows.
inline std::uint64_t preallocate(int file, std::uint64_t offset, std::uint64_t zeros) {
  static constexpr char zero_block[1 << 16] = {};
  std::uint64_t done = 0;
  while (done < zeros) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(zeros - done, sizeof zero_block));
    std::uint64_t written = 0;
    const bool whole = put_at(file, std::string_view(zero_block, chunk), offset + done, &written);
    done += written;
    if (!whole) break;
  }
  return done;
}

inline result<void> sync_file(int file, const std::filesystem::path& path) {
  if (::fdatasync(file) != 0) return os_error("syncing", path);
  return {};
}

inline result<void> sync_directory(const std::filesystem::path& dir) {
  fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return os_error("opening directory", dir);
  if (::fsync(d.get()) != 0) return os_error("syncing directory", dir);
  return {};
}

inline result<std::string> read_file(const std::filesystem::path& path) {
  fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f) return os_error("opening", path);
  std::string data;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(f.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("reading", path);
    }
    if (n == 0) break;
    data.append(buffer, static_cast<std::size_t>(n));
  }
  return data;
}

inline std::string segment_name(std::uint64_t number) {
  std::string digits = std::to_string(number);
  return "segment-" + std::string(digits.size() < 10 ? 10 - digits.size() : 0, '0') + digits + ".log";
}

/// The segment number of "segment-0000000042.log", or nullopt.
inline std::optional<std::uint64_t> segment_number(const std::string& name) {
  constexpr std::string_view prefix = "segment-", suffix = ".log";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoull(digits);
}

}  // namespace detail::file

/// A durable `outbox::storage` and `outbox::entity_storage` on plain files. Movable; thread-safe.
class file_storage {
 public:
  /// Opens (creating if needed) the storage in `directory`. Typed errors: already_open (another
  /// owner), corrupt_data (with file and offset), io_error, disk_full.
  [[nodiscard]] static result<file_storage> open(const std::filesystem::path& directory, file_options options = {}) {
    auto s = std::make_unique<state>(directory, options);
    if (auto opened = s->open(); !opened) return opened.error();
    return file_storage(std::move(s));
  }

  /// Throws `outbox::exception` with the error `open` returns.
  explicit file_storage(const std::filesystem::path& directory, file_options options = {})
      : file_storage(open(directory, options).value()) {}

  file_storage(file_storage&&) noexcept = default;
  file_storage& operator=(file_storage&&) noexcept = default;
  ~file_storage() = default;

  /// From this many events up, an append hands the indexing of its events to a helper thread
  /// (started by the first such append, one per storage) and writes and syncs them while it
  /// works. Indexing costs about 0.6 us per event, waking a thread some 10-20 us, so smaller
  /// appends do all of it on the caller's thread.
  static constexpr std::size_t overlap_min_events = 16;

  [[nodiscard]] const file_recovery& recovery() const noexcept { return s_->recovery; }
  [[nodiscard]] const std::filesystem::path& directory() const noexcept { return s_->dir; }

  /// Bytes of log in segment files now, how many of them hold the current state, and the
  /// zeros preallocated after the log.
  struct usage {
    std::uint64_t total_bytes = 0;
    std::uint64_t live_bytes = 0;
    std::uint64_t preallocated_bytes = 0;
    std::uint64_t segments = 0;
    std::uint64_t compactions = 0;
    /// Segment starts and compactions that failed without changing anything (a full disk):
    /// the storage went on without them, and tries again later.
    std::uint64_t failed_maintenance = 0;
    std::uint64_t syncs = 0;
    std::uint64_t writes = 0;
  };
  [[nodiscard]] usage disk_usage() {
    std::lock_guard lock(s_->mutex);
    return {s_->total_bytes, s_->live_bytes,         s_->allocated_bytes - s_->active_bytes, s_->segments.size(),
            s_->compactions, s_->failed_maintenance, s_->syncs,                              s_->writes};
  }

  /// Rewrites the live state into a fresh segment now, whatever the garbage. If the snapshot
  /// does not fit (`errc::disk_full`), nothing changes and the storage goes on as it was.
  result<void> compact() {
    std::unique_lock lock(s_->mutex);
    s_->wait_idle(lock);
    if (s_->broken) return *s_->broken;
    return s_->compact_locked();
  }

  // ---- outbox::storage -----------------------------------------------------------------------

  result<void> append(std::span<event> events) {
    if (events.size() >= overlap_min_events) return s_->append_overlapped(events);
    return s_->mutate([&](auto& m) { return m.append(events); });
  }
  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    const std::size_t before = out.size();
    auto done = s_->mutate([&](auto& m) { return m.claim(request, out); });
    if (!done) out.resize(before);
    return done;
  }
  result<std::size_t> record(std::span<outcome> outcomes) {
    auto done = s_->mutate([&](auto& m) { return m.record(outcomes); });
    if (!done)
      for (auto& o : outcomes) o.applied = false;
    return done;
  }
  result<std::optional<event>> find(event_id id) {
    return s_->read([&](auto& m) { return result<std::optional<event>>(m.find(id)); });
  }
  result<std::vector<event>> query(const event_query& q) {
    return s_->read([&](auto& m) { return result<std::vector<event>>(m.query(q)); });
  }
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
    return s_->read([&](auto& m) { return result<event_stats>(m.stats(user, now)); });
  }
  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp) {
    return s_->read([&](auto& m) { return result<std::optional<timestamp>>(m.next_wake(user)); });
  }
  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    return s_->mutate([&](auto& m) { return m.reset(ids, now); });
  }
  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    return s_->mutate([&](auto& m) { return m.reset_dead(user, now); });
  }
  result<std::size_t> purge_completed(timestamp before) {
    return s_->mutate([&](auto& m) { return m.purge_completed(before); });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return s_->mutate([&](auto& m) { return m.clamp_schedule(retry_limit, lease_limit); });
  }

  // ---- outbox::entity_storage ------------------------------------------------------------------

  result<void> commit(const entity_change& change) {
    return s_->mutate([&](auto& m) { return m.commit(change); });
  }
  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
    return s_->read([&](auto& m) { return result<std::optional<entity_record>>(m.find_entity(collection, id)); });
  }
  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key) {
    return s_->read([&](auto& m) {
      return result<std::optional<entity_record>>(m.find_entity_by_key(collection, user, natural_key));
    });
  }
  result<std::vector<entity_record>> query_entities(const entity_query& q) {
    return s_->read([&](auto& m) { return result<std::vector<entity_record>>(m.query_entities(q)); });
  }

 private:
  struct state;
  explicit file_storage(std::unique_ptr<state> s) : s_(std::move(s)) {}


  struct state {
    std::filesystem::path dir;
    file_options options;
    detail::file::fd lock_file;
    file_recovery recovery;

    std::mutex mutex;  // guards everything below
    std::condition_variable cv;
    detail::memory_state memory;
    detail::change_journal journal;

    // The log: segment numbers in order; the last one is active (appended to).
    std::vector<std::uint64_t> segments;
    detail::file::fd active;
    std::uint64_t active_bytes = 0;     // where its log ends (the next group goes here)
    std::uint64_t allocated_bytes = 0;  // its size on disk: the log, then zeros (preallocation)

    // Group commit: groups are serialised into `pending` under the mutex in the order they were
    // applied to memory (in the same hold of the mutex: whoever takes it next sees memory and
    // log agree); one leader at a time (`flushing`) writes and syncs them with the mutex
    // released. The leader is one of the waiting callers.
    std::string pending;
    std::vector<std::size_t> groups_in_pending;  // end offset of each group in `pending`
    std::string spare;                           // the last flush's buffer, reused for `pending`
    std::uint64_t groups_applied = 0;
    std::uint64_t groups_durable = 0;
    bool flushing = false;
    std::optional<outbox::error> broken;

    // A leader under sync_policy::group first waits, briefly, for as many groups as the last
    // flush carried: the callers that flush released come back with their next save while it
    // would otherwise already be syncing without them, and would have to wait for the flush
    // after it. See gather().
    std::condition_variable gather_cv;
    bool gathering = false;
    std::size_t last_flush_groups = 0;
    std::chrono::nanoseconds last_flush_time{0};

    /// One leader's work: bytes of whole groups, and what they make durable.
    struct flush_job {
      std::string bytes;
      std::size_t groups = 0;
      std::uint64_t target = 0;  // groups_durable once written
      int file = -1;
      std::filesystem::path path;
      std::uint64_t offset = 0;  // where the bytes go: the log's end
      std::uint64_t zeros = 0;   // preallocation to write after them; once written, what fitted
    };

    // The indexer thread, started by the first large append: it puts into memory the events
    // that append has just logged, while the appender writes and syncs them. One job at a time;
    // until it is done every other use of memory waits (index_ready), and the appender returns
    // only after it, so the span it indexes is alive throughout.
    std::thread indexer;
    std::condition_variable indexer_cv;  // a job was handed over, or the storage closes
    std::condition_variable indexed_cv;  // the job is done
    std::span<event> index_job;
    std::uint64_t index_jobs_given = 0;
    std::uint64_t index_jobs_done = 0;
    bool indexer_stop = false;

    // Space accounting for compaction: the size of the latest record of each live item.
    detail::seq_sizes event_bytes;
    std::map<std::pair<std::string, std::string>, std::uint32_t> entity_bytes;
    std::uint64_t total_bytes = 0;
    std::uint64_t live_bytes = 0;
    std::uint64_t compactions = 0;
    std::uint64_t failed_maintenance = 0;  // rolls and compactions given up without a change
    std::uint64_t compact_again_at = 0;    // dead bytes to wait for after a failed compaction
    std::uint64_t syncs = 0;
    std::uint64_t writes = 0;
    bool unreadable_last = false;  // the last segment's header was unreadable (salvage kept going)

    state(std::filesystem::path directory, file_options o) : dir(std::move(directory)), options(o) {}
    state(const state&) = delete;
    state& operator=(const state&) = delete;
    ~state() {
      if (indexer.joinable()) {
        {
          std::lock_guard lock(mutex);
          indexer_stop = true;  // no job can be outstanding: its appender would still be running
        }
        indexer_cv.notify_one();
        indexer.join();
      }
      // Leave the log as long as what it holds. Unsynced: should the cut be lost, opening
      // reads the zeros as free space anyway.
      if (active && !broken && allocated_bytes > active_bytes) {
        const int cut = ::ftruncate(active.get(), static_cast<off_t>(active_bytes));
        static_cast<void>(cut);
      }
    }

    std::filesystem::path path_of(std::uint64_t number) const { return dir / detail::file::segment_name(number); }

    // ---- opening ---------------------------------------------------------------------------

    result<void> open() {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) return outbox::error(errc::io_error, "creating " + dir.string() + ": " + ec.message());
      ::chmod(dir.c_str(), 0700);
      const auto lock_path = dir / "LOCK";
      lock_file = detail::file::fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!lock_file) return detail::file::os_error("opening", lock_path);
      if (::flock(lock_file.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
          return outbox::error(errc::already_open, dir.string() + " is in use by another file_storage (LOCK is held)");
        return detail::file::os_error("locking", lock_path);
      }

      // A leftover .tmp is a compaction that never got renamed: the old segments are the state.
      std::vector<std::uint64_t> found;
      for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
          std::filesystem::remove(entry.path(), ec);
          continue;
        }
        if (auto n = detail::file::segment_number(name)) found.push_back(*n);
      }
      if (ec) return outbox::error(errc::io_error, "listing " + dir.string() + ": " + ec.message());
      std::sort(found.begin(), found.end());

      // Start from the newest segment that begins with a snapshot: it holds the whole state.
      std::size_t first = 0;
      std::vector<std::string> contents(found.size());
      for (std::size_t i = found.size(); i-- > 0;) {
        auto bytes = detail::file::read_file(path_of(found[i]));
        if (!bytes) return bytes.error();
        contents[i] = std::move(*bytes);
        if (detail::log::scan_segment(std::string_view(contents[i]).substr(0, std::min<std::size_t>(contents[i].size(), 1 << 20)),
                                      false)
                .snapshot) {
          first = i;
          break;
        }
      }
      std::uint64_t log_end = 0;  // of the last segment: its zeros, if any, follow
      for (std::size_t i = first; i < found.size(); ++i) {
        const bool last = i + 1 == found.size();
        auto replayed = replay(found[i], contents[i], last);
        if (!replayed) return replayed.error();
        log_end = *replayed;
      }
      // Segments before the snapshot are garbage from a compaction that crashed before deleting.
      for (std::size_t i = 0; i < first; ++i) std::filesystem::remove(path_of(found[i]), ec);
      segments.assign(found.begin() + static_cast<std::ptrdiff_t>(first), found.end());

      std::random_device rd;
      memory.set_next_lease((static_cast<std::uint64_t>(rd()) << 32 | rd()) & 0x3FFF'FFFF'FFFF'FFFFULL);
      if (segments.empty()) return start_segment(1, {});
      if (unreadable_last) return start_segment(segments.back() + 1, {});  // never append after garbage
      return open_active(log_end);
    }

    /// Replays one segment; returns where its readable log ends.
    result<std::uint64_t> replay(std::uint64_t number, const std::string& bytes, bool last) {
      const auto path = path_of(number);
      auto scan = detail::log::scan_segment(bytes, options.salvage);
      if (scan.bad_offset) {
        const bool torn = last && !scan.valid_after_bad && !scan.bad_header;
        if (!torn && !options.salvage) {
          return outbox::error(errc::corrupt_data, path.string() + ": unreadable record at offset " +
                                                       std::to_string(*scan.bad_offset) +
                                                       (scan.bad_header ? " (segment header)" : "") +
                                                       "; open with file_options::salvage to keep the readable groups");
        }
        if (!torn) {
          ++recovery.salvaged_skips;
          recovery.notes.push_back("salvaged " + path.string() + ": skipped unreadable data from offset " +
                                   std::to_string(*scan.bad_offset));
        }
      }
      for (std::size_t i = 0; i < scan.groups.size(); ++i) {
        const auto contradiction = apply_group(scan.groups[i]);
        if (!contradiction) continue;
        const std::string where = path.string() + ": the group at offset " + std::to_string(scan.group_offsets[i]);
        if (!options.salvage)
          return outbox::error(errc::corrupt_data, where + " contradicts the log before it: " + *contradiction +
                                                       "; open with file_options::salvage to keep the rest");
        ++recovery.salvaged_skips;
        recovery.notes.push_back("salvaged " + where + ": left out what contradicts the log before it (" + *contradiction + ")");
      }
      recovery.groups_replayed += scan.groups.size();
      total_bytes += scan.valid_end;
      // Zeros after the log are preallocated space, not a record; torn bytes end at the last
      // byte that is not zero.
      std::size_t written_end = bytes.size();
      while (written_end > scan.valid_end && bytes[written_end - 1] == '\0') --written_end;
      if (last && written_end > scan.valid_end && !scan.bad_header) {
        // A crash mid-write: cut back to the last whole group.
        const std::uint64_t cut = written_end - scan.valid_end;
        detail::file::fd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
        if (!f || ::ftruncate(f.get(), static_cast<off_t>(scan.valid_end)) != 0 || ::fsync(f.get()) != 0)
          return detail::file::os_error("truncating the torn tail of", path);
        recovery.torn_bytes_truncated += cut;
        recovery.torn_file = path.string();
        recovery.notes.push_back("truncated a torn tail of " + std::to_string(cut) + " bytes from " + path.string() +
                                 " at offset " + std::to_string(scan.valid_end));
      } else if (!last && bytes.size() > scan.valid_end && !options.salvage) {
        return outbox::error(errc::corrupt_data, path.string() + ": incomplete group at offset " +
                                                     std::to_string(scan.valid_end) + " in a sealed segment");
      } else if (!last && bytes.size() > scan.valid_end && !scan.bad_offset) {  // say what salvage dropped
        ++recovery.salvaged_skips;
        recovery.notes.push_back("salvaged " + path.string() + ": dropped an incomplete group at offset " +
                                 std::to_string(scan.valid_end) + " of a sealed segment");
      }
      if (last && scan.bad_header && bytes.size() >= detail::log::header_size) unreadable_last = true;
      if (scan.bad_header && last && bytes.size() < detail::log::header_size) {
        // A segment whose creation was cut short: start it again.
        std::error_code ec;
        std::filesystem::remove(path, ec);
      }
      return scan.valid_end;
    }

    /// Replays one group into memory. A record that contradicts the state (an event id or a
    /// natural key already held by another live item: the log was checksummed, but not written
    /// by this storage) is left out, and the first such is described in the return value.
    std::optional<std::string> apply_group(std::vector<detail::log::record>& group) {
      std::optional<std::string> contradiction;
      for (auto& rec : group) {
        if (auto* m = std::get_if<detail::log::marker>(&rec)) {
          if (m->type == detail::log::record_type::snapshot) {
            memory = detail::memory_state();
            event_bytes.clear();
            entity_bytes.clear();
            live_bytes = 0;
            total_bytes = 0;
          }
          memory.set_next_seq(m->next_seq);
        } else if (auto* e = std::get_if<event>(&rec)) {
          if (!memory.restore_event(*e)) {
            if (!contradiction) contradiction = "event " + e->id.to_string() + " logged under seq " + std::to_string(e->seq) + " while another event holds that id";
            continue;
          }
          account_event(e->seq, record_size(*e));
        } else if (auto* seq = std::get_if<std::uint64_t>(&rec)) {
          forget_event(*seq);
          memory.restore_removed_event(*seq);
        } else if (auto* row = std::get_if<entity_record>(&rec)) {
          if (!memory.restore_entity(*row)) {
            if (!contradiction) contradiction = "entity " + row->collection + "/" + row->id + " logged with natural key \"" + row->natural_key + "\" while another row of its user holds it";
            continue;
          }
          account_entity({row->collection, row->id}, record_size(*row));
        } else if (auto* gone = std::get_if<detail::log::removed_entity>(&rec)) {
          forget_entity({gone->collection, gone->id});
          memory.restore_removed_entity({gone->collection, gone->id});
        }
      }
      return contradiction;
    }

    static std::uint32_t record_size(const event& e) {
      return static_cast<std::uint32_t>(detail::log::event_record_size(e));
    }
    static std::uint32_t record_size(const entity_record& r) {
      return static_cast<std::uint32_t>(detail::log::entity_record_size(r));
    }
    void account_event(std::uint64_t seq, std::uint32_t bytes) {
      live_bytes -= event_bytes.set(seq, bytes);
      live_bytes += bytes;
    }
    void forget_event(std::uint64_t seq) { live_bytes -= event_bytes.erase(seq); }
    void account_entity(const std::pair<std::string, std::string>& key, std::uint32_t bytes) {
      auto [it, fresh] = entity_bytes.try_emplace(key, bytes);
      if (!fresh) live_bytes -= it->second;
      it->second = bytes;
      live_bytes += bytes;
    }
    void forget_entity(const std::pair<std::string, std::string>& key) {
      auto it = entity_bytes.find(key);
      if (it == entity_bytes.end()) return;
      live_bytes -= it->second;
      entity_bytes.erase(it);
    }

    /// Makes the last segment active; its log ends at `log_end`, zeros (if any) follow.
    result<void> open_active(std::uint64_t log_end) {
      const auto path = path_of(segments.back());
      active = detail::file::fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
      if (!active) return detail::file::os_error("opening", path);
      struct stat st {};
      if (::fstat(active.get(), &st) != 0) return detail::file::os_error("inspecting", path);
      allocated_bytes = static_cast<std::uint64_t>(st.st_size);
      active_bytes = std::min(log_end, allocated_bytes);
      if (active_bytes < detail::log::header_size) {
        // Empty (its creation was cut short): write the header again.
        if (::ftruncate(active.get(), 0) != 0) return detail::file::os_error("resetting", path);
        const std::string header = detail::log::segment_header();
        if (auto w = detail::file::write_at(active.get(), header, 0, path); !w) return w;
        if (auto s = detail::file::sync_file(active.get(), path); !s) return s;
        active_bytes = allocated_bytes = header.size();
      }
      return {};
    }

    /// Creates segment `number` holding the header and `initial` records, synced, and makes it
    /// active. Written under a temporary name and renamed, so it appears whole or not at all.
    /// A failure up to the rename (a full disk, say) changes nothing and removes the temporary
    /// file: `*clean` is then true. After the rename the new segment is on disk but may not be
    /// in memory: `*clean` is false, and the storage must be reopened.
    result<void> start_segment(std::uint64_t number, std::string_view initial, bool* clean = nullptr) {
      const auto path = path_of(number);
      const auto tmp = std::filesystem::path(path.string() + ".tmp");
      if (clean) *clean = true;
      auto written = [&]() -> result<void> {
        detail::file::fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!f) return detail::file::os_error("creating", tmp);
        if (auto w = detail::file::write_at(f.get(), detail::log::segment_header(), 0, tmp); !w) return w;
        if (auto w = detail::file::write_at(f.get(), initial, detail::log::header_size, tmp); !w) return w;
        return detail::file::sync_file(f.get(), tmp);
      }();
      if (written && ::rename(tmp.c_str(), path.c_str()) != 0) written = detail::file::os_error("renaming", tmp);
      if (!written) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);  // its room back, on a full disk
        return written;
      }
      if (clean) *clean = false;
      if (auto d = detail::file::sync_directory(dir); !d) return d;
      segments.push_back(number);
      total_bytes += detail::log::header_size + initial.size();
      return open_active(detail::log::header_size + initial.size());
    }

    // ---- operations ------------------------------------------------------------------------

    template <class F>
    auto read(F&& f) -> decltype(f(memory)) {
      std::unique_lock lock(mutex);
      index_ready(lock);
      if (broken) return *broken;
      return f(memory);
    }

    /// Applies an operation to memory, logs what it changed, and returns once that is durable.
    template <class F>
    auto mutate(F&& f) -> decltype(f(memory)) {
      std::unique_lock lock(mutex);
      index_ready(lock);
      if (broken) return *broken;
      return mutate_locked(lock, f);
    }
    /// `mutate` for a caller holding the mutex, the indexer idle and the storage not broken.
    template <class F>
    auto mutate_locked(std::unique_lock<std::mutex>& lock, F&& f) -> decltype(f(memory)) {
      journal.clear();
      memory.set_journal(&journal);
      auto outcome = f(memory);
      memory.set_journal(nullptr);
      if (journal.empty()) return outcome;  // refused, or changed nothing: nothing to log
      serialise_journal();
      const std::uint64_t ticket = group_queued();
      if (auto durable = wait_durable(lock, ticket); !durable) return durable.error();
      return outcome;
    }

    /// `append` with the index update overlapped with the write and sync: the events are
    /// logged first, in exactly the state `append_checked` gives them, then the indexer thread
    /// takes them while this caller writes and syncs (or waits for the flush that carries them).
    /// The log order is still the order of the operations: any other operation waits for the
    /// indexer before it reads memory, so one on these events (a claim) is logged after them,
    /// and acknowledged only once a sync covers them too. Waking the indexer costs 10-20 us on
    /// a halted CPU; here it happens during the sync, not before it as a hand-off of the write
    /// would. The caller returns once its events are synced and indexed.
    result<void> append_overlapped(std::span<event> events) {
      std::unique_lock lock(mutex);
      index_ready(lock);
      if (broken) return *broken;
      if (!indexer_running()) return mutate_locked(lock, [&](auto& m) { return m.append(events); });
      if (auto valid = memory.check_append(events); !valid) return valid;
      std::uint64_t seq = memory.next_seq();
      const std::size_t start = pending.size();
      for (event& e : events) {
        e.seq = seq++;
        e.lease = 0;
        const std::size_t before = pending.size();
        detail::log::put_event(pending, e);
        account_event(e.seq, static_cast<std::uint32_t>(pending.size() - before));
      }
      detail::log::put_marker(pending, detail::log::record_type::commit, seq);
      total_bytes += pending.size() - start;
      groups_in_pending.push_back(pending.size());
      const std::uint64_t ticket = group_queued();
      index_job = events;
      const std::uint64_t job = ++index_jobs_given;
      indexer_cv.notify_one();
      auto durable = wait_durable(lock, ticket);
      // Whatever the flush gave, the indexer uses `events` until it is done with them.
      indexed_cv.wait(lock, [&] { return index_jobs_done >= job; });
      return durable;
    }

    /// Waits until memory holds every event logged so far: the indexer has no job. Every use
    /// of memory after the storage opened comes after this.
    void index_ready(std::unique_lock<std::mutex>& lock) {
      if (index_jobs_done != index_jobs_given) indexed_cv.wait(lock, [&] { return index_jobs_done == index_jobs_given; });
    }

    /// Counts the group just serialised into `pending`; returns its ticket.
    std::uint64_t group_queued() {
      ++writes;
      if (gathering && groups_in_pending.size() >= last_flush_groups) gather_cv.notify_one();
      return ++groups_applied;
    }

    void serialise_journal() {
      // Deduplicate: each touched item is logged once, in its final state.
      std::sort(journal.events.begin(), journal.events.end());
      journal.events.erase(std::unique(journal.events.begin(), journal.events.end()), journal.events.end());
      const std::size_t start = pending.size();
      for (auto seq : journal.events) {
        const event* e = memory.event_at(seq);
        if (!e) continue;  // written, then removed within the same operation
        const std::size_t before = pending.size();
        detail::log::put_event(pending, *e);
        account_event(seq, static_cast<std::uint32_t>(pending.size() - before));
      }
      for (auto seq : journal.removed_events) {
        if (memory.event_at(seq)) continue;
        detail::log::put_event_removed(pending, seq);
        forget_event(seq);
      }
      for (const auto& key : journal.entities) {
        const entity_record* row = memory.entity_at(key);
        if (!row) continue;
        const std::size_t before = pending.size();
        detail::log::put_entity(pending, *row);
        account_entity(key, static_cast<std::uint32_t>(pending.size() - before));
      }
      for (const auto& key : journal.removed_entities) {
        if (memory.entity_at(key)) continue;
        detail::log::put_entity_removed(pending, key.first, key.second);
        forget_entity(key);
      }
      detail::log::put_marker(pending, detail::log::record_type::commit, memory.next_seq());
      total_bytes += pending.size() - start;
      groups_in_pending.push_back(pending.size());
    }

    result<void> wait_durable(std::unique_lock<std::mutex>& lock, std::uint64_t ticket) {
      while (groups_durable < ticket) {
        if (broken) return *broken;
        if (flushing) {
          cv.wait(lock);
          continue;
        }
        // Our group is neither durable nor in flight, so it is in `pending`: lead a flush.
        flushing = true;
        gather(lock);
        flush_job job = take_batch_locked();
        lock.unlock();
        const auto started = std::chrono::steady_clock::now();
        auto written = write_batch(job);
        const auto took = std::chrono::steady_clock::now() - started;
        lock.lock();
        index_ready(lock);  // finishing may compact, which reads memory
        finish_flush_locked(job, written, took);
      }
      return {};
    }

    /// The leader's wait for the callers the last flush released (sync_policy::group): until
    /// as many groups are pending as that flush carried, for at most half the last flush's time
    /// and never over 250 us. Alone, a caller's own group is all the last flush carried: no wait.
    void gather(std::unique_lock<std::mutex>& lock) {
      if (options.sync != file_options::sync_policy::group || groups_in_pending.size() >= last_flush_groups) return;
      const auto limit = std::min<std::chrono::nanoseconds>(last_flush_time / 2, std::chrono::microseconds(250));
      gathering = true;
      gather_cv.wait_for(lock, limit, [&] { return groups_in_pending.size() >= last_flush_groups; });
      gathering = false;
    }

    /// Moves the groups of one flush out of `pending` (all of them; one under every_commit).
    /// Call with `flushing` just set by the caller, and at least one group pending.
    flush_job take_batch_locked() {
      flush_job job;
      job.groups = options.sync == file_options::sync_policy::every_commit ? 1 : groups_in_pending.size();
      if (job.groups == groups_in_pending.size()) {
        job.bytes.swap(pending);
        pending.swap(spare);  // an empty buffer that kept its capacity
        groups_in_pending.clear();
      } else {
        const std::size_t take_bytes = groups_in_pending[job.groups - 1];
        job.bytes.assign(pending, 0, take_bytes);
        pending.erase(0, take_bytes);
        groups_in_pending.erase(groups_in_pending.begin(), groups_in_pending.begin() + static_cast<std::ptrdiff_t>(job.groups));
        for (auto& end : groups_in_pending) end -= take_bytes;
      }
      // Only one flush runs at a time, so every group not pending is durable or in this one.
      job.target = groups_durable + job.groups;
      job.file = active.get();  // segments roll only when nothing is pending or in flight
      job.path = path_of(segments.back());
      job.offset = active_bytes;
      // Past the allocation: zeros after the bytes, to a block boundary, but not beyond where
      // the segment will end (it rolls once its log reaches segment_bytes).
      const std::uint64_t end = active_bytes + job.bytes.size();
      const std::uint64_t reach = std::min(end + options.preallocate_bytes, options.segment_bytes);
      if (end > allocated_bytes && reach > end && options.sync != file_options::sync_policy::none)
        job.zeros = (reach + 4095) / 4096 * 4096 - end;
      return job;
    }

    /// Writes and syncs a flush; the mutex is not held. The zeros after the bytes are best
    /// effort: `job.zeros` becomes what fitted.
    result<void> write_batch(flush_job& job) const {
      auto written = detail::file::write_at(job.file, job.bytes, job.offset, job.path);
      if (!written) return written;
      if (job.zeros > 0) job.zeros = detail::file::preallocate(job.file, job.offset + job.bytes.size(), job.zeros);
      if (options.sync != file_options::sync_policy::none) written = detail::file::sync_file(job.file, job.path);
      return written;
    }

    void finish_flush_locked(flush_job& job, const result<void>& written, std::chrono::nanoseconds took) {
      flushing = false;
      if (!written) {
        broken = outbox::error(written.error().code, written.error().message + " (reopen the storage to recover)");
      } else {
        ++syncs;
        groups_durable = job.target;
        active_bytes += job.bytes.size();
        allocated_bytes = std::max(allocated_bytes, active_bytes + job.zeros);
        last_flush_groups = job.groups;
        last_flush_time = took;
        maintain_locked();
      }
      job.bytes.clear();
      if (job.bytes.capacity() > spare.capacity()) spare.swap(job.bytes);
      cv.notify_all();
    }

    /// Starts the indexer thread if it is not running; false if the system has no thread for it.
    bool indexer_running() {
      if (indexer.joinable()) return true;
      try {
        indexer = std::thread([this] { indexer_loop(); });
      } catch (const std::system_error&) {
        return false;
      }
      return true;
    }

    void indexer_loop() {
      std::unique_lock lock(mutex);
      for (;;) {
        indexer_cv.wait(lock, [&] { return index_jobs_done != index_jobs_given || indexer_stop; });
        if (index_jobs_done == index_jobs_given) return;
        try {
          memory.append_checked(index_job);
        } catch (...) {  // out of memory: memory no longer holds what the log does
          if (!broken)
            broken = outbox::error(errc::storage_failure, "indexing appended events failed (reopen the storage to recover)");
        }
        index_job = {};
        ++index_jobs_done;
        indexed_cv.notify_all();
      }
    }

    void wait_idle(std::unique_lock<std::mutex>& lock) {
      for (;;) {
        index_ready(lock);
        if (broken || (!flushing && groups_durable == groups_applied)) return;
        cv.wait(lock);
      }
    }

    /// After a flush: roll to a new segment or compact, when due. Only with nothing pending, so
    /// that no group can straddle segments. Neither is needed for correctness, so one that fails
    /// without changing anything (a full disk) is counted and the storage goes on without it:
    /// the active segment grows past `segment_bytes` (a new one is tried after each flush), and
    /// compaction is tried again once `compact_min_dead_bytes` more garbage has built up. A
    /// failure that leaves the files in an unknown state breaks the storage until reopened.
    void maintain_locked() {
      if (groups_durable != groups_applied) return;
      const std::uint64_t dead = total_bytes > live_bytes ? total_bytes - live_bytes : 0;
      if (dead >= std::max(options.compact_min_dead_bytes, compact_again_at) &&
          static_cast<double>(dead) > static_cast<double>(live_bytes) * options.compact_dead_ratio) {
        if (!compact_locked()) compact_again_at = dead + options.compact_min_dead_bytes;
        return;
      }
      if (active_bytes >= options.segment_bytes) {
        if (auto sealed = seal_active(); !sealed) {
          maintenance_failed(sealed.error(), false);
          return;
        }
        bool clean = true;
        if (auto started = start_segment(segments.back() + 1, {}, &clean); !started)
          maintenance_failed(started.error(), clean);
      }
    }

    /// Counts a failed roll or compaction; one that left the files unknown breaks the storage.
    outbox::error maintenance_failed(const outbox::error& e, bool clean) {
      ++failed_maintenance;
      if (!clean && !broken) broken = outbox::error(e.code, e.message + " (reopen the storage to recover)");
      return e;
    }

    /// Cuts the active segment's preallocated zeros off, durably, before a later segment
    /// exists: only the last segment may end in zeros.
    result<void> seal_active() {
      if (allocated_bytes <= active_bytes) return {};
      const auto path = path_of(segments.back());
      if (::ftruncate(active.get(), static_cast<off_t>(active_bytes)) != 0 || ::fsync(active.get()) != 0)
        return detail::file::os_error("sealing", path);
      allocated_bytes = active_bytes;
      return {};
    }

    /// Writes the live state to a new segment (tmp, sync, rename, sync dir), then deletes the old.
    /// Each live item is written in the state its latest record holds, so its record is the
    /// size `event_bytes` / `entity_bytes` already say, and `live_bytes` stays what it is: the
    /// accounting needs no rebuilding, and the snapshot's buffer is sized once from it.
    result<void> compact_locked() {
      // The active segment's zeros go first: they are room the snapshot may need on a full disk,
      // and the segment is deleted after a compaction anyway.
      if (auto sealed = seal_active(); !sealed) return maintenance_failed(sealed.error(), false);
      std::string snapshot;
      snapshot.reserve(live_bytes + 2 * (detail::log::frame_overhead + 9));
      detail::log::put_marker(snapshot, detail::log::record_type::snapshot, memory.next_seq());
      for (const auto& entry : memory.events()) detail::log::put_event(snapshot, entry.second);
      for (const auto& entry : memory.entities()) detail::log::put_entity(snapshot, entry.second);
      detail::log::put_marker(snapshot, detail::log::record_type::commit, memory.next_seq());
      const std::vector<std::uint64_t> old = segments;
      bool clean = true;
      if (auto started = start_segment(segments.back() + 1, snapshot, &clean); !started)
        return maintenance_failed(started.error(), clean);
      total_bytes = detail::log::header_size + snapshot.size();
      std::error_code ec;
      for (auto n : old) std::filesystem::remove(path_of(n), ec);
      segments.erase(segments.begin(), segments.end() - 1);
      ++compactions;
      compact_again_at = 0;
      if (auto synced = detail::file::sync_directory(dir); !synced) return maintenance_failed(synced.error(), false);
      return {};
    }
  };

  std::unique_ptr<state> s_;
};

}  // namespace outbox
