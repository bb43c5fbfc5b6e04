/// \file
/// Google Benchmark bodies for `outbox::postgres_storage` behind `outbox::Outbox`, each next to
/// plain libpq doing the same inserts and state changes (`BM_baseline_raw_libpq_*`), in the same
/// binary and against the same server, so bench/README.md can report ratios.
///
///     BM_postgres_storage_enqueue/batch:N              Outbox::enqueue(span) of N events, one durable transaction
///     BM_baseline_raw_libpq_insert/batch:N             the same key and event rows in the storage's tables, one pipelined transaction
///     BM_postgres_storage_drain/events:N/relays:R      R relays (an Outbox each, own connection) until empty, batches of 100
///     BM_baseline_raw_libpq_skip_locked/events:N/relays:R   R threads: claim 100 with FOR UPDATE SKIP LOCKED, mark completed
///     BM_postgres_storage_stats/completed:N            stats() over N delivered events, calls per second
///     BM_baseline_raw_libpq_count_by_status/completed:N   SELECT status, count(*) ... GROUP BY status on that table
///
/// The server is private to the run: `scripts/pg_server start` in a fresh directory under TMPDIR
/// (a Unix socket, no TCP), stopped when the binary ends, whatever way it ends: a watchdog
/// process stops it once this process is gone. `OUTBOX_BENCH_PG_CONNINFO` names a running server
/// instead; the benchmark then creates and drops its own schemas there and stops nothing.
///
/// Server and clients share this machine's cores: the drain rows report the CPU each side used
/// per second of the drain (`server_cores`, `client_cores`), read from /proc for the server's
/// processes and from the process clock for the clients, which tells whether more relays can
/// go faster on it. Every row is timed in real time (manual time around the measured part).
/// A drain starts right after its fill, before autovacuum has analyzed the tables, as a burst of
/// events meets the relays in use; a drain gets 120 s (OUTBOX_BENCH_DRAIN_BUDGET_S) before it is
/// stopped.

#include <benchmark/benchmark.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "outbox/outbox.hpp"
#include "outbox/storage/postgres.hpp"
#include "common.hpp"

namespace {

using namespace outbox_bench;

using postgres_outbox = outbox::Outbox<outbox::postgres_storage, NullTransport>;

// ---- the private server ----------------------------------------------------------------------

/// The server the rows run against: OUTBOX_BENCH_PG_CONNINFO, or a private one started by
/// scripts/pg_server in a directory of its own. A watchdog child (forked before any thread
/// exists) waits for this process to close a pipe, which the kernel does however it ends, and
/// then runs `scripts/pg_server stop`: the server never outlives the benchmark.
class bench_server {
 public:
  bench_server() {
    if (const char* given = std::getenv("OUTBOX_BENCH_PG_CONNINFO"); given != nullptr && *given != '\0') {
      conninfo_ = given;
      return;
    }
    dir_ = (std::filesystem::temp_directory_path() / ("outbox-pgbench-" + std::to_string(::getpid()))).string();
    const std::string command = "'" + std::string(OUTBOX_PG_SERVER) + "' start '" + dir_ + "'";
    std::fflush(nullptr);
    FILE* out = ::popen(command.c_str(), "r");
    if (out == nullptr) {
      failure_ = "cannot run scripts/pg_server";
      return;
    }
    char line[1024];
    while (std::fgets(line, sizeof line, out) != nullptr) conninfo_ += line;
    const int status = ::pclose(out);
    while (!conninfo_.empty() && (conninfo_.back() == '\n' || conninfo_.back() == '\r')) conninfo_.pop_back();
    if (status != 0 || conninfo_.empty()) {
      failure_ = WIFEXITED(status) && WEXITSTATUS(status) == 77
                     ? "PostgreSQL is not installed: the PostgreSQL rows are skipped"
                     : "scripts/pg_server could not start a server (exit status " + std::to_string(status) + ")";
      conninfo_.clear();
      stop_now();  // whatever it left behind
      return;
    }
    start_watchdog();
  }
  bench_server(const bench_server&) = delete;
  bench_server& operator=(const bench_server&) = delete;
  ~bench_server() {
    if (watchdog_ > 0) {
      ::close(watch_fd_);  // the watchdog stops the server now
      int ignored = 0;
      ::waitpid(watchdog_, &ignored, 0);
    }
  }

  [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }
  [[nodiscard]] const std::string& failure() const noexcept { return failure_; }

 private:
  void stop_now() const {
    const std::string command = "'" + std::string(OUTBOX_PG_SERVER) + "' stop '" + dir_ + "' >/dev/null";
    if (std::system(command.c_str()) != 0) std::fprintf(stderr, "outbox: scripts/pg_server stop %s failed\n", dir_.c_str());
  }

  void start_watchdog() {
    int fds[2];
    if (::pipe(fds) != 0) {
      stop_now();
      conninfo_.clear();
      failure_ = "pipe failed";
      return;
    }
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[1]);
      char byte = 0;
      while (::read(fds[0], &byte, 1) != 0) {
      }  // EOF: the benchmark process closed its end or died
      ::execl(OUTBOX_PG_SERVER, OUTBOX_PG_SERVER, "stop", dir_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[0]);
    if (pid < 0) {
      ::close(fds[1]);
      stop_now();
      conninfo_.clear();
      failure_ = "fork failed";
      return;
    }
    watchdog_ = pid;
    watch_fd_ = fds[1];
  }

  std::string dir_;
  std::string conninfo_;
  std::string failure_;
  pid_t watchdog_ = -1;
  int watch_fd_ = -1;
};

std::optional<bench_server> server;

// ---- plain libpq ------------------------------------------------------------------------------

struct result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using pq_result = std::unique_ptr<PGresult, result_deleter>;

/// One plain connection to the run's server; remembers its first error.
class pq_connection {
 public:
  pq_connection() : conn_(PQconnectdb(server->conninfo().c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) fail("connect");
    else exec("SET client_min_messages = warning");
  }
  pq_connection(const pq_connection&) = delete;
  pq_connection& operator=(const pq_connection&) = delete;
  ~pq_connection() { PQfinish(conn_); }

  [[nodiscard]] bool ok() const noexcept { return error_.empty(); }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] PGconn* handle() const noexcept { return conn_; }

  /// Runs `sql` (no parameters, any number of statements); false on error.
  bool exec(const std::string& sql) {
    if (!ok()) return false;
    pq_result r(PQexec(conn_, sql.c_str()));
    return check(r.get(), sql);
  }

  /// Runs one statement with text parameters; the result, or null on error.
  pq_result query(const std::string& sql, std::span<const char* const> params) {
    if (!ok()) return nullptr;
    pq_result r(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr, params.data(), nullptr,
                             nullptr, 0));
    if (!check(r.get(), sql)) return nullptr;
    return r;
  }

  bool prepare(const char* name, const std::string& sql, int params) {
    if (!ok()) return false;
    pq_result r(PQprepare(conn_, name, sql.c_str(), params, nullptr));
    return check(r.get(), sql);
  }

  /// Runs a prepared statement with text parameters; the result, or null on error.
  pq_result run(const char* name, std::span<const char* const> params) {
    if (!ok()) return nullptr;
    pq_result r(PQexecPrepared(conn_, name, static_cast<int>(params.size()), params.data(), nullptr, nullptr, 0));
    if (!check(r.get(), name)) return nullptr;
    return r;
  }

  bool check(const PGresult* r, const std::string& what) {
    const auto status = PQresultStatus(r);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_PIPELINE_SYNC) return true;
    error_ = what.substr(0, 50) + ": " + (r ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
    return false;
  }

  void fail(const std::string& what) { error_ = what + ": " + PQerrorMessage(conn_); }

 private:
  PGconn* conn_;
  std::string error_;
};

/// A schema of its own for one storage or baseline: created empty, dropped with everything in
/// it when this goes away, so every row starts from empty tables and leaves nothing behind.
class temp_schema {
 public:
  temp_schema() {
    static std::atomic<unsigned> counter{0};
    name_ = "outbox_bench_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    admin_.exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
  }
  temp_schema(const temp_schema&) = delete;
  temp_schema& operator=(const temp_schema&) = delete;
  ~temp_schema() { admin_.exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE"); }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] pq_connection& admin() noexcept { return admin_; }

 private:
  pq_connection admin_;
  std::string name_;
};

outbox::result<outbox::postgres_storage> open_storage(const temp_schema& schema) {
  outbox::postgres_options options;
  options.schema = schema.name();
  return outbox::postgres_storage::open(server->conninfo(), options);
}

std::int64_t micros_now() { return outbox::to_micros(outbox::system_clock{}.now()); }

// ---- durable enqueue ---------------------------------------------------------------------------

void BM_postgres_storage_enqueue(benchmark::State& state) {
  std::optional<postgres_outbox> box;
  std::optional<temp_schema> schema;
  enqueue_batches(state, box, [&]() -> bool {
    box.reset();
    schema.reset();
    schema.emplace();
    auto storage = open_storage(*schema);
    if (!succeeded(state, storage)) return false;
    box.emplace(std::move(*storage));
    return true;
  });
  box.reset();
}
BENCHMARK(BM_postgres_storage_enqueue)->Apply(outbox_bench::batch_rows);

/// The bare queue's table: the columns an outbox event has, a uuid key, the index a claim by
/// user and append order reads.
constexpr const char* raw_table_sql =
    "CREATE TABLE {s}.events("
    " seq bigserial PRIMARY KEY, id uuid NOT NULL UNIQUE, type text NOT NULL, entity_id text NOT NULL,"
    " ordering_key text NOT NULL, user_id text NOT NULL, payload bytea NOT NULL, priority integer NOT NULL DEFAULT 0,"
    " status smallint NOT NULL DEFAULT 0, attempts integer NOT NULL DEFAULT 0, max_attempts integer NOT NULL,"
    " created_at bigint NOT NULL, updated_at bigint NOT NULL, completed_at bigint NOT NULL DEFAULT 0,"
    " lease bigint NOT NULL DEFAULT 0, lease_until bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX ON {s}.events(user_id, seq) WHERE status = 0;";

/// `sql` with every {s} replaced by the schema's name.
std::string in_schema(std::string sql, const temp_schema& schema) {
  for (std::size_t at = sql.find("{s}"); at != std::string::npos; at = sql.find("{s}", at))
    sql.replace(at, 3, schema.name());
  return sql;
}

bool create_raw_table(temp_schema& schema) {
  return schema.admin().exec(in_schema("CREATE SCHEMA {s};", schema) + in_schema(raw_table_sql, schema));
}

/// Time-ordered uuids in text form, like the outbox's UUID-v7: the unique index grows at its
/// right edge.
class raw_ids {
 public:
  std::string next() {
    const std::uint64_t high = high_++;
    const std::uint64_t low = (low_ += 0x9E3779B97F4A7C15ULL);
    char text[37];
    std::snprintf(text, sizeof text, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(high >> 32),
                  static_cast<unsigned>((high >> 16) & 0xffff), static_cast<unsigned>(high & 0xffff),
                  static_cast<unsigned>(low >> 48), static_cast<unsigned long long>(low & 0xffffffffffffULL));
    return text;
  }

 private:
  std::uint64_t high_ = static_cast<std::uint64_t>(micros_now()) << 12;
  std::uint64_t low_ = static_cast<std::uint64_t>(::getpid());
};

/// The same rows in the storage's own tables (created by opening the storage on the schema), as
/// plain libpq writes them at its best: one pipeline per batch (BEGIN, per event a prepared
/// INSERT of its key row, locking it as the storage's append does, and of the event row, COMMIT,
/// then one sync), so a batch costs one round trip and one durable commit, as the append does.
class raw_inserter {
 public:
  explicit raw_inserter(const temp_schema& schema) {
    db_.prepare("insert_key",
                in_schema("INSERT INTO {s}.keys(user_id, ordering_key, in_flight) VALUES($1, $2, 0) "
                          "ON CONFLICT (user_id, ordering_key) DO UPDATE SET in_flight = {s}.keys.in_flight",
                          schema),
                2);
    db_.prepare("insert_event",
                in_schema("INSERT INTO {s}.events(id, type, entity_id, entity_type, ordering_key, user_id, payload, "
                          "priority, status, attempts, max_attempts, created_at, updated_at, retry_after, "
                          "completed_at, last_error, remote_id, lease, lease_until, relay) "
                          "VALUES($1, $2, $3, '', $3, $4, $5, 0, 0, 0, $6, $7, $7, 0, 0, '', '', 0, 0, 0)",
                          schema),
                7);
  }

  [[nodiscard]] pq_connection& db() noexcept { return db_; }

  bool insert(std::span<const outbox::new_event> batch) {
    PGconn* c = db_.handle();
    if (!db_.ok()) return false;
    if (PQenterPipelineMode(c) != 1) {
      db_.fail("pipeline mode");
      return false;
    }
    const std::string now = std::to_string(micros_now());
    const std::string attempts = std::to_string(default_max_attempts);
    ids_.clear();
    for (std::size_t i = 0; i < batch.size(); ++i) ids_.push_back(ids_source_.next());
    bool sent = PQsendQueryParams(c, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
    for (std::size_t i = 0; sent && i < batch.size(); ++i) {
      const outbox::new_event& e = batch[i];
      const char* values[] = {ids_[i].c_str(), e.type.c_str(),    e.entity_id.c_str(), e.user_id.c_str(),
                              e.payload.c_str(), attempts.c_str(), now.c_str()};
      const int lengths[] = {0, 0, 0, 0, static_cast<int>(e.payload.size()), 0, 0};
      const int formats[] = {0, 0, 0, 0, 1, 0, 0};  // the payload as bytes, like the storage's bytea
      const char* key[] = {e.user_id.c_str(), e.entity_id.c_str()};  // ordering key = entity id
      sent = PQsendQueryPrepared(c, "insert_key", 2, key, nullptr, nullptr, 0) == 1 &&
             PQsendQueryPrepared(c, "insert_event", 7, values, lengths, formats, 0) == 1;
    }
    sent = sent && PQsendQueryParams(c, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1 &&
           PQpipelineSync(c) == 1;
    bool ok = sent;
    if (!sent) db_.fail("sending the batch");
    // One result (and a null) per query, then the sync.
    for (;;) {
      pq_result r(PQgetResult(c));
      if (!r) {
        if (PQstatus(c) != CONNECTION_OK) break;
        continue;  // the end of one query's results
      }
      const auto status = PQresultStatus(r.get());
      if (status == PGRES_PIPELINE_SYNC) break;
      if (ok && !db_.check(r.get(), "pipelined insert")) ok = false;
      if (!sent && PQstatus(c) != CONNECTION_OK) break;
    }
    PQexitPipelineMode(c);
    return ok;
  }

 private:
  pq_connection db_;
  raw_ids ids_source_;
  std::vector<std::string> ids_;
};

void BM_baseline_raw_libpq_insert(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::vector<outbox::new_event> pool = make_pool();
  std::optional<raw_inserter> inserter;
  std::optional<temp_schema> schema;
  batches_on_the_clock(
      state,
      [&] {
        inserter.reset();
        schema.reset();
        schema.emplace();
        if (auto tables = open_storage(*schema); !tables) return skipped(state, tables.error().what().c_str());
        inserter.emplace(*schema);
        return inserter->db().ok() || skipped(state, inserter->db().error().c_str());
      },
      [&](std::size_t offset, std::size_t) {
        return inserter->insert(std::span<const outbox::new_event>(pool.data() + offset, batch));
      },
      [&](bool done) { return done || skipped(state, inserter->db().error().c_str()); });
  inserter.reset();
}
BENCHMARK(BM_baseline_raw_libpq_insert)->Apply(outbox_bench::batch_rows);

// ---- CPU of the server and of the clients --------------------------------------------------------

/// CPU seconds (user + system) of process `pid` from /proc/<pid>/stat, and its parent; nullopt
/// when it is gone.
struct proc_cpu {
  double seconds = 0;
  pid_t parent = 0;
};
std::optional<proc_cpu> read_proc_cpu(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return std::nullopt;
  const std::size_t close = text.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  proc_cpu out;
  unsigned long long utime = 0, stime = 0;
  // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 4) out.parent = static_cast<pid_t>(std::stol(field));
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  out.seconds = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return out;
}

/// The server's processes: its postmaster (the parent of any backend) and every child of it.
class server_cpu_meter {
 public:
  server_cpu_meter() {
    pq_connection db;
    pq_result r = db.query("SELECT pg_backend_pid()", {});
    if (!r || PQntuples(r.get()) != 1) return;
    if (auto backend = read_proc_cpu(static_cast<pid_t>(std::atol(PQgetvalue(r.get(), 0, 0)))))
      postmaster_ = backend->parent;
  }

  /// CPU seconds used so far by the postmaster and its live children (0 if not on this machine).
  [[nodiscard]] double seconds() const {
    if (postmaster_ <= 0) return 0;
    double total = 0;
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      const auto pid = static_cast<pid_t>(std::stol(name));
      const auto cpu = read_proc_cpu(pid);
      if (cpu && (pid == postmaster_ || cpu->parent == postmaster_)) total += cpu->seconds;
    }
    return total;
  }

 private:
  pid_t postmaster_ = 0;
};

double client_cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

/// The wall and CPU time of a drain row's timed parts, summed over its iterations.
struct drain_clock {
  server_cpu_meter server_meter;
  double wall = 0, server_cpu = 0, client_cpu = 0;
  std::chrono::steady_clock::time_point started;
  double server_at_start = 0, client_at_start = 0;

  void start() {
    server_at_start = server_meter.seconds();
    client_at_start = client_cpu_seconds();
    started = std::chrono::steady_clock::now();
  }
  /// Ends the timed part; its wall seconds.
  double stop() {
    const double seconds = seconds_between(started, std::chrono::steady_clock::now());
    wall += seconds;
    client_cpu += client_cpu_seconds() - client_at_start;
    server_cpu += server_meter.seconds() - server_at_start;
    return seconds;
  }
  /// The drain counters, plus the cores each side kept busy on average while draining.
  void report(benchmark::State& state) const {
    set_drain_counters(state);
    if (wall <= 0) return;
    state.counters["server_cores"] = server_cpu / wall;
    state.counters["client_cores"] = client_cpu / wall;
  }
};

// ---- drain -----------------------------------------------------------------------------------

/// `->Apply(relay_rows<N>)`: the drain rows of N events with 1, 2 and 4 relays, in manual time,
/// in ms. Each iteration fills a fresh schema off the clock, so a row fixes its iteration count.
template <std::int64_t Events>
void relay_rows(benchmark::internal::Benchmark* b) {
  b->ArgNames({"events", "relays"})->UseManualTime()->Unit(benchmark::kMillisecond);
  for (const std::int64_t relays : {1, 2, 4}) b->Args({Events, relays});
}

/// Runs `relay(i)` on `count` threads at once; waits for all.
template <class Relay>
void run_relays(int count, Relay relay) {
  std::vector<std::thread> threads;
  for (int i = 1; i < count; ++i) threads.emplace_back(relay, i);
  relay(0);
  for (auto& t : threads) t.join();
}

/// Whether a drain of the relays delivered all `total` events; if not, skips the row with the
/// first relay's error, or with how far it got before its budget ran out.
bool drained(benchmark::State& state, const std::vector<std::string>& errors, std::size_t delivered, std::size_t total,
             std::chrono::steady_clock::time_point start) {
  if (const auto e = std::find_if(errors.begin(), errors.end(), [](const auto& s) { return !s.empty(); });
      e != errors.end())
    return skipped(state, e->c_str());
  return delivered == total || skipped(state, stopped_message(delivered, total, start).c_str());
}

/// Writes `total` events, entity_count distinct entities in rotation, through the outbox in
/// enqueues of 1000, off the clock.
std::optional<std::string> fill(temp_schema& schema, const std::vector<outbox::new_event>& pool,
                                std::size_t total) {
  auto storage = open_storage(schema);
  if (!storage) return storage.error().what();
  postgres_outbox box(std::move(*storage));
  for (std::size_t done = 0; done < total; done += entity_count) {
    const std::size_t n = std::min(entity_count, total - done);
    if (auto ids = box.enqueue(std::span<const outbox::new_event>(pool.data(), n)); !ids) return ids.error().what();
  }
  return std::nullopt;
}

/// R relays, each an Outbox over its own storage (its own connection) on one database, each
/// calling process_once() until the events are all delivered; batches of 100.
void BM_postgres_storage_drain(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  const int relays = static_cast<int>(state.range(1));
  const std::vector<outbox::new_event> pool = make_pool();
  drain_clock clock;
  for (auto _ : state) {
    temp_schema schema;
    if (auto failed = fill(schema, pool, total)) {
      state.SkipWithError(("setup: " + *failed).c_str());
      break;
    }
    std::vector<std::optional<postgres_outbox>> boxes(static_cast<std::size_t>(relays));
    for (auto& box : boxes) {
      auto storage = open_storage(schema);
      if (!storage) {
        state.SkipWithError(storage.error().what().c_str());
        break;
      }
      box.emplace(std::move(*storage), drain_options());
      box->set_user(user);
    }
    if (state.error_occurred()) break;

    std::atomic<std::size_t> delivered{0};
    std::atomic<bool> stopped{false};
    std::vector<std::string> errors(boxes.size());
    clock.start();
    const auto start = std::chrono::steady_clock::now();
    run_relays(relays, [&](int i) {
      auto& box = *boxes[static_cast<std::size_t>(i)];
      // A relay that finds nothing claimable while others hold the last keys' heads looks again
      // until every event is delivered.
      while (delivered.load() < total && !stopped.load()) {
        double seconds = 0;
        const auto got = drain(box, [&] { return stopped.load() || over_budget(start); }, seconds);
        if (!got) {
          errors[static_cast<std::size_t>(i)] = got.error().what();
          stopped = true;
          break;
        }
        delivered += *got;
        if (over_budget(start)) stopped = true;
        if (*got == 0) std::this_thread::yield();
      }
    });
    const double seconds = clock.stop();
    boxes.clear();
    if (!drained(state, errors, delivered.load(), total, start)) break;
    state.SetIterationTime(seconds);
  }
  clock.report(state);
}
BENCHMARK(BM_postgres_storage_drain)->Apply(relay_rows<10'000>)->Iterations(3);
BENCHMARK(BM_postgres_storage_drain)->Apply(relay_rows<100'000>)->Iterations(1);

/// The bare queue: its table, filled with the same rows by one INSERT ... SELECT (not analyzed,
/// as the outbox's tables are not).
bool fill_raw_queue(temp_schema& schema, std::size_t total) {
  const std::string now = std::to_string(micros_now());
  const std::string sql = in_schema(
      "INSERT INTO {s}.events(id, type, entity_id, ordering_key, user_id, payload, max_attempts, created_at, "
      "updated_at) SELECT gen_random_uuid(), '" + event_type + "', 'entity-' || (i % " +
          std::to_string(entity_count) + "), 'entity-' || (i % " + std::to_string(entity_count) + "), '" + user +
          "', convert_to(repeat('x', " + std::to_string(payload_bytes) + "), 'UTF8'), " +
          std::to_string(default_max_attempts) + ", " + now + ", " + now + " FROM generate_series(0, " +
          std::to_string(total) + " - 1) AS i ORDER BY i",
      schema);
  return create_raw_table(schema) && schema.admin().exec(sql);
}

/// Raw SQL on the same server: R threads, each its own connection, each cycle one statement
/// claiming the 100 oldest pending rows of the user with FOR UPDATE SKIP LOCKED (so relays
/// never wait for one another) and marking them processing under a lease, reading them back;
/// then one statement marking them completed where the lease still holds. Two commits per 100
/// events, like the outbox; no per-key order, no lease expiry, no retry scheduling.
void BM_baseline_raw_libpq_skip_locked(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  const int relays = static_cast<int>(state.range(1));
  drain_clock clock;
  for (auto _ : state) {
    temp_schema schema;
    if (!fill_raw_queue(schema, total)) {
      state.SkipWithError(("setup: " + schema.admin().error()).c_str());
      break;
    }
    std::vector<std::unique_ptr<pq_connection>> connections;
    for (int i = 0; i < relays; ++i) {
      auto& db = *connections.emplace_back(std::make_unique<pq_connection>());
      db.prepare("claim",
                 in_schema("UPDATE {s}.events SET status = 1, attempts = attempts + 1, lease = $2, lease_until = $3, "
                           "updated_at = $4 WHERE seq IN (SELECT seq FROM {s}.events WHERE user_id = $1 AND status = 0 "
                           "ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED) "
                           "RETURNING seq, id, type, entity_id, user_id, payload",
                           schema),
                 5);
      db.prepare("complete",
                 in_schema("UPDATE {s}.events SET status = 2, updated_at = $3, completed_at = $3, lease = 0, "
                           "lease_until = 0 WHERE seq = ANY($1::bigint[]) AND status = 1 AND lease = $2",
                           schema),
                 3);
      if (!db.ok()) {
        state.SkipWithError(db.error().c_str());
        break;
      }
    }
    if (state.error_occurred()) break;

    std::atomic<std::size_t> delivered{0};
    std::atomic<std::int64_t> leases{0};
    std::atomic<bool> stopped{false};
    std::vector<std::string> errors(connections.size());
    clock.start();
    const auto start = std::chrono::steady_clock::now();
    run_relays(relays, [&](int i) {
      pq_connection& db = *connections[static_cast<std::size_t>(i)];
      const std::string limit = std::to_string(drain_batch);
      std::string seqs;
      while (!stopped.load()) {
        const std::int64_t now = micros_now();
        const std::string lease = std::to_string(++leases);
        const std::string until = std::to_string(now + 120'000'000);
        const std::string at = std::to_string(now);
        const char* claim_params[] = {user.c_str(), lease.c_str(), until.c_str(), at.c_str(), limit.c_str()};
        pq_result claimed = db.run("claim", claim_params);
        if (!claimed) break;
        const int rows = PQntuples(claimed.get());
        if (rows == 0) {
          if (delivered.load() >= total) break;
          std::this_thread::yield();  // the last rows are claimed by another relay
          continue;
        }
        seqs = "{";
        for (int r = 0; r < rows; ++r) {
          if (r > 0) seqs += ',';
          seqs += PQgetvalue(claimed.get(), r, 0);
          benchmark::DoNotOptimize(PQgetvalue(claimed.get(), r, 5));  // the transport reads the rows
        }
        seqs += '}';
        const std::string done = std::to_string(micros_now());
        const char* complete_params[] = {seqs.c_str(), lease.c_str(), done.c_str()};
        pq_result completed = db.run("complete", complete_params);
        if (!completed) break;
        delivered += static_cast<std::size_t>(std::atol(PQcmdTuples(completed.get())));
        if (over_budget(start)) stopped = true;
      }
      if (!db.ok()) {
        errors[static_cast<std::size_t>(i)] = db.error();
        stopped = true;
      }
    });
    const double seconds = clock.stop();
    if (!drained(state, errors, delivered.load(), total, start)) break;
    state.SetIterationTime(seconds);
  }
  clock.report(state);
}
BENCHMARK(BM_baseline_raw_libpq_skip_locked)->Apply(relay_rows<10'000>)->Iterations(3);
BENCHMARK(BM_baseline_raw_libpq_skip_locked)->Apply(relay_rows<100'000>)->Iterations(1);

// ---- stats over a long history -----------------------------------------------------------------

/// A schema holding `completed` events, every one delivered through the outbox (filled, drained
/// and vacuumed once per size, off the clock, and shared by the outbox's row and its baseline);
/// null, with the benchmark skipped, if that failed.
temp_schema* history_schema(benchmark::State& state, std::size_t completed) {
  static std::map<std::size_t, std::unique_ptr<temp_schema>> built;
  auto& slot = built[completed];
  if (slot) return slot.get();
  auto schema = std::make_unique<temp_schema>();
  if (auto failed = fill(*schema, make_pool(), completed)) {
    state.SkipWithError(("setup: " + *failed).c_str());
    return nullptr;
  }
  auto storage = open_storage(*schema);
  if (!succeeded(state, storage)) return nullptr;
  postgres_outbox box(std::move(*storage), drain_options());
  box.set_user(user);
  double seconds = 0;
  const auto delivered = drain(box, [] { return false; }, seconds);
  if (!delivered || *delivered != completed) {
    state.SkipWithError("setup: the history's drain did not deliver every event");
    return nullptr;
  }
  // A history is deliveries autovacuum has since visited: until then the index entries of their
  // earlier versions (pending, processing) are still there to be skipped.
  if (!schema->admin().exec("VACUUM ANALYZE " + schema->name() + ".events")) {
    state.SkipWithError(("setup: " + schema->admin().error()).c_str());
    return nullptr;
  }
  slot = std::move(schema);
  return slot.get();
}

/// stats() for all users over a history of N delivered events: what a status screen polls. Real
/// time: the server does the work.
void BM_postgres_storage_stats(benchmark::State& state) {
  temp_schema* schema = history_schema(state, static_cast<std::size_t>(state.range(0)));
  if (schema == nullptr) return;
  auto storage = open_storage(*schema);
  if (!succeeded(state, storage)) return;
  for (auto _ : state) {
    auto counted = storage->stats(std::nullopt, outbox::system_clock{}.now());
    if (!counted) {
      state.SkipWithError(counted.error().what().c_str());
      break;
    }
    benchmark::DoNotOptimize(counted->counts);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_postgres_storage_stats)->ArgName("completed")->Arg(10'000)->Arg(100'000)->UseRealTime();

/// The plain way to the same counts: `SELECT status, count(*) ... GROUP BY status` over the same
/// table, which reads every event (the ages stats() also gives are left out).
void BM_baseline_raw_libpq_count_by_status(benchmark::State& state) {
  temp_schema* schema = history_schema(state, static_cast<std::size_t>(state.range(0)));
  if (schema == nullptr) return;
  pq_connection conn;
  const std::string sql = "SELECT status, count(*) FROM " + schema->name() + ".events GROUP BY status";
  for (auto _ : state) {
    pq_result r = conn.query(sql, {});
    if (!r) {
      state.SkipWithError(conn.error().c_str());
      break;
    }
    benchmark::DoNotOptimize(r.get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_baseline_raw_libpq_count_by_status)->ArgName("completed")->Arg(10'000)->Arg(100'000)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  // A drain of 100k events makes 2000 durable commits, each a WAL flush of milliseconds on a
  // virtual disk: allow it two minutes rather than the other binaries' 30 s.
  ::setenv("OUTBOX_BENCH_DRAIN_BUDGET_S", "120", 0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  server.emplace();
  if (server->conninfo().empty()) {
    std::fprintf(stderr, "outbox_bench_postgres: %s\n", server->failure().c_str());
    server.reset();
    return 0;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  server.reset();  // stops the private server before the binary reports done
  return 0;
}
