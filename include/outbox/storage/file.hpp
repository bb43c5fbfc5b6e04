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
/// same in-memory index `memory_storage` uses (detail/memory_state.hpp), so claim order and
/// per-key rules are identical. Completed events, which no claim needs, stay out of it: they are
/// kept as their records (detail/completed_archive.hpp), which `find`, `query`, `stats` and
/// `purge_completed` read beside the index, so an open costs the index of the live events and
/// not of every delivery the log still retains.
///
/// Durability (`file_options::sync`): `group` (default) and `every_commit` return after
/// `fdatasync`, so nothing acknowledged is lost on power loss; `group` lets concurrent callers
/// share one sync (detail/group_commit.hpp: the caller leading a sync first waits, at most
/// min(last sync / 2, 250 us), for as many callers as the last sync served). `none` returns
/// after `write`: safe from a process crash (`kill -9`), not from power loss.
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
/// reported in `recovery()`; so is a last write a power cut kept only in part, its later
/// sectors on disk and an earlier one still the zeros it replaced (detail/log_format.hpp,
/// `lost_sector_between`). Any other unreadable record followed by readable ones is corruption:
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
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "outbox/detail/change_journal.hpp"
#include "outbox/detail/file_io.hpp"
#include "outbox/detail/file_log.hpp"
#include "outbox/detail/group_commit.hpp"
#include "outbox/detail/lifecycle.hpp"
#include "outbox/detail/log_format.hpp"
#include "outbox/detail/memory_state.hpp"
#include "outbox/clock.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/file_options.hpp"

namespace outbox {


/// A durable `outbox::storage` and `outbox::entity_storage` on plain files. Movable; thread-safe.
/// `Io` is the layer its system calls go through (detail/file_io.hpp): the system itself in
/// `file_storage`, a recorder in the power-loss simulator (testing/power_loss.hpp).
template <class Io = detail::file::posix_io>
class basic_file_storage {
 public:
  /// Opens (creating if needed) the storage in `directory`. Typed errors: already_open (another
  /// owner), corrupt_data (with file and offset), io_error, disk_full.
  [[nodiscard]] static result<basic_file_storage> open(const std::filesystem::path& directory, file_options options = {},
                                                       Io io = {}) {
    auto s = std::make_unique<state>(directory, options, std::move(io));
    if (auto opened = s->open(); !opened) return opened.error();
    return basic_file_storage(std::move(s));
  }

  /// Throws `outbox::exception` with the error `open` returns.
  explicit basic_file_storage(const std::filesystem::path& directory, file_options options = {}, Io io = {})
      : basic_file_storage(open(directory, options, std::move(io)).value()) {}

  basic_file_storage(basic_file_storage&&) noexcept = default;
  basic_file_storage& operator=(basic_file_storage&&) noexcept = default;
  ~basic_file_storage() = default;

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
    return s_->mutate([&](auto& m) -> result<void> {
      if (auto fresh = s_->not_archived(events); !fresh) return fresh;
      return m.append(events);
    });
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
    return s_->read([&](auto& m) {
      auto found = m.find(id);
      return result<std::optional<event>>(found ? std::move(found) : s_->archive.find(id));
    });
  }
  result<std::vector<event>> query(const event_query& q) {
    return s_->read([&](auto& m) { return result<std::vector<event>>(s_->query_locked(m, q)); });
  }
  /// Counts and ages for `user` (all users if none), aged at `now`: the shape every storage and
  /// the outbox share. `now` is the outbox's clock; without it, the wall clock.
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
    return s_->read([&](auto& m) {
      event_stats counted = m.stats(user, now);
      counted.counts[static_cast<std::size_t>(status::completed)] += s_->archive.count(user);
      return result<event_stats>(counted);
    });
  }
  result<event_stats> stats(std::optional<std::string_view> user = std::nullopt) {
    return stats(user, system_clock{}.now());
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
    return s_->mutate([&](auto& m) -> result<std::size_t> {
      auto purged = m.purge_completed(before);
      if (!purged) return purged;
      // The archive's share is logged as removals with the index's, in the same group.
      return *purged + s_->archive.purge(before, s_->journal.removed_events);
    });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return s_->mutate([&](auto& m) { return m.clamp_schedule(retry_limit, lease_limit); });
  }

  // ---- outbox::entity_storage ------------------------------------------------------------------

  result<void> commit(const entity_change& change) {
    return s_->mutate([&](auto& m) -> result<void> {
      if (change.op == entity_change::event_op::append) {
        if (auto fresh = s_->not_archived(std::span<const event>(&change.event, 1)); !fresh) return fresh;
      }
      return m.commit(change);
    });
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
  explicit basic_file_storage(std::unique_ptr<state> s) : s_(std::move(s)) {}


  struct state : detail::file::segment_log<Io> {
    using log = detail::file::segment_log<Io>;
    using log::account_event, log::account_entity, log::active, log::active_bytes, log::allocated_bytes,
        log::broken, log::compact_locked, log::forget_entity, log::forget_event, log::io, log::maintenance_failed,
        log::memory, log::options, log::path_of, log::seal_active, log::segments, log::start_segment,
        log::total_bytes, log::live_bytes, log::compact_again_at, log::archive;

    std::mutex mutex;  // guards everything, the log's state included
    detail::change_journal journal;


    // Group commit (detail/group_commit.hpp): groups are serialised into `pending` under the
    // mutex in the order they were applied to memory (in the same hold of the mutex: whoever
    // takes it next sees memory and log agree); one leader at a time writes and syncs them with
    // the mutex released. The leader is one of the waiting callers. Under sync_policy::group it
    // first gathers, for at most 250 us, as many groups as the last flush carried.
    std::string pending;
    std::vector<std::size_t> groups_in_pending;  // end offset of each group in `pending`
    std::string spare;                           // the last flush's buffer, reused for `pending`
    detail::group_commit commit_group;

    /// One leader's work: bytes of whole groups, and where they go.
    struct flush_job {
      std::string bytes;
      std::size_t members = 0;  // groups
      result<void> written;
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

    std::uint64_t syncs = 0;
    std::uint64_t writes = 0;

    state(std::filesystem::path directory, file_options o, Io layer)
        : log(std::move(directory), o, std::move(layer)),
          commit_group({o.sync == file_options::sync_policy::group ? std::chrono::microseconds(250) : std::chrono::microseconds(0),
                        detail::group_commit::expectation::last_group}) {}
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
        const int cut = io.ftruncate(active.get(), active_bytes);
        static_cast<void>(cut);
      }
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
      if (auto fresh = not_archived(events); !fresh) return fresh;
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

    /// New events must not reuse the id of an archived one (memory checks its own).
    [[nodiscard]] result<void> not_archived(std::span<const event> events) const {
      if (archive.empty()) return {};
      for (const event& e : events)
        if (archive.seq_of(e.id)) return detail::lifecycle::duplicate_id(e.id);
      return {};
    }

    /// The index's page merged with the archive's, in seq order; each honours every filter of `q`.
    std::vector<event> query_locked(detail::memory_state& m, const event_query& q) const {
      std::vector<event> page = m.query(q);
      std::vector<event> archived = archive.query(q);
      if (archived.empty()) return page;
      std::vector<event> merged;
      merged.reserve(std::min(q.limit, page.size() + archived.size()));
      auto a = page.begin(), b = archived.begin();
      while (merged.size() < q.limit && (a != page.end() || b != archived.end())) {
        if (b == archived.end() || (a != page.end() && a->seq < b->seq))
          merged.push_back(std::move(*a++));
        else
          merged.push_back(std::move(*b++));
      }
      return merged;
    }

    /// Waits until memory holds every event logged so far: the indexer has no job. Every use
    /// of memory after the storage opened comes after this.
    void index_ready(std::unique_lock<std::mutex>& lock) {
      if (index_jobs_done != index_jobs_given) indexed_cv.wait(lock, [&] { return index_jobs_done == index_jobs_given; });
    }

    /// Counts the group just serialised into `pending`; returns its ticket.
    std::uint64_t group_queued() {
      ++writes;
      return commit_group.join();
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

    /// The file storage's steps of a group commit: take the pending groups, write and sync them,
    /// account for them.
    struct flush_steps {
      state& s;
      std::unique_lock<std::mutex>& lock;
      flush_job take(std::size_t /*queued*/) { return s.take_batch_locked(); }
      bool write(flush_job& job) {
        job.written = s.write_batch(job);
        return job.written.has_value();
      }
      void finish(flush_job& job, bool written) {
        s.index_ready(lock);  // finishing may compact, which reads memory
        s.finish_flush_locked(job, written);
      }
      [[nodiscard]] bool stopped() const noexcept { return s.broken.has_value(); }
    };

    /// Returns once group `ticket` is durable, leading flushes while no one else does.
    result<void> wait_durable(std::unique_lock<std::mutex>& lock, std::uint64_t ticket) {
      flush_steps steps{*this, lock};
      if (!commit_group.await(lock, ticket, steps)) return *broken;
      return {};
    }

    /// Moves the groups of one flush out of `pending` (all of them; one under every_commit).
    /// Called by the leader, with at least one group pending.
    flush_job take_batch_locked() {
      flush_job job;
      job.members = options.sync == file_options::sync_policy::every_commit ? 1 : groups_in_pending.size();
      if (job.members == groups_in_pending.size()) {
        job.bytes.swap(pending);
        pending.swap(spare);  // an empty buffer that kept its capacity
        groups_in_pending.clear();
      } else {
        const std::size_t take_bytes = groups_in_pending[job.members - 1];
        job.bytes.assign(pending, 0, take_bytes);
        pending.erase(0, take_bytes);
        groups_in_pending.erase(groups_in_pending.begin(), groups_in_pending.begin() + static_cast<std::ptrdiff_t>(job.members));
        for (auto& end : groups_in_pending) end -= take_bytes;
      }
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
    result<void> write_batch(flush_job& job) {
      auto written = detail::file::write_at(io, job.file, job.bytes, job.offset, job.path);
      if (!written) return written;
      if (job.zeros > 0) job.zeros = detail::file::preallocate(io, job.file, job.offset + job.bytes.size(), job.zeros);
      if (options.sync != file_options::sync_policy::none) written = detail::file::sync_file(io, job.file, job.path);
      return written;
    }

    /// `written` is false if the write failed, or threw before it could say (out of memory).
    void finish_flush_locked(flush_job& job, bool written) {
      if (!written) {
        const outbox::error e = job.written ? outbox::error(errc::storage_failure, "writing the log failed") : job.written.error();
        broken = outbox::error(e.code, e.message + " (reopen the storage to recover)");
      } else {
        ++syncs;
        active_bytes += job.bytes.size();
        allocated_bytes = std::max(allocated_bytes, active_bytes + job.zeros);
        maintain_locked();
      }
      job.bytes.clear();
      if (job.bytes.capacity() > spare.capacity()) spare.swap(job.bytes);
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
        if (broken || commit_group.idle()) return;
        commit_group.wait_for_group(lock);
      }
    }

    /// After a flush: roll to a new segment or compact, when due. Only with nothing pending, so
    /// that no group can straddle segments. Neither is needed for correctness, so one that fails
    /// without changing anything (a full disk) is counted and the storage goes on without it:
    /// the active segment grows past `segment_bytes` (a new one is tried after each flush), and
    /// compaction is tried again once `compact_min_dead_bytes` more garbage has built up. A
    /// failure that leaves the files in an unknown state breaks the storage until reopened.
    void maintain_locked() {
      if (!commit_group.all_settled()) return;
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

  };

  std::unique_ptr<state> s_;
};

/// The file storage on the system's own calls.
using file_storage = basic_file_storage<>;

}  // namespace outbox
