// The main demo: a health-tracking app syncing through a misbehaving backend, as real processes.
// This driver starts the backend (outbox_demo_server, on 127.0.0.1, a port the system picks) and
// the app (outbox_demo_app: users taking turns on one device over simulated days, saving through
// repositories into SQLite and delivering with outbox::http_transport). Halfway through, the
// backend holds its answers to one batch and says so; the driver kills the app with SIGKILL
// while that batch is in flight and starts it again on the same database, which sends the batch
// again. At the end it joins the backend's view (what it stored by Idempotency-Key, the
// duplicates, when each change first arrived) with the app's database (every event's status,
// attempts and last error) into one report.
//
// A run is reproducible from its seed: the app's data and the backend's faults are drawn from
// the seed and positions in the simulation, never from the time or event ids, and the kill
// comes at the same batch every time, so the same flags give the same counts (duplicates
// included); only the wall-clock figures differ.
//
// It exits 1 if any saved change is missing at the backend, an event is stuck, an entity is
// neither synced nor given a reason, or a process did not end as planned; 2 on a bad flag
// (`outbox_demo --help` lists them).
#include "demo_shared.hpp"

#include <outbox/storage/sqlite.hpp>

#include <httplib.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

struct config {
  int users = 3;
  int days = 3;
  double failure_rate = 0.10;  // retryable 503s
  double offline_rate = 0.02;  // chance per minute that the backend goes offline for a while
  double reject_rate = 0.002;  // permanent 422s
  int latency_ms = 2;
  std::uint64_t seed = 7;
  std::string db;     // empty: a fresh file in a temporary directory, removed at the end
  bool crash = true;  // kill the app halfway through with a batch in flight, and restart it
  bool quiet = false;
};

/// Parses the command line into `c`; returns the exit code when the demo must not run.
int parse(int argc, char** argv, config& c) {
  using demo::within;
  CLI::App cli("A health app syncing through a misbehaving backend over simulated days: an app process and a "
               "backend process over HTTP on 127.0.0.1.",
               "outbox_demo");
  cli.option_defaults()->always_capture_default();
  cli.add_option("--users", c.users, "users taking turns on the device, 1-60")->type_name("N")->check(within(1, 60));
  cli.add_option("--days", c.days, "simulated days, 1-3650")->type_name("N")->check(within(1, 3650));
  cli.add_option("--failure-rate", c.failure_rate, "share of requests the backend answers 503 (retried), [0, 1)")
      ->type_name("X")
      ->check(within(0.0, 1.0, true));
  cli.add_option("--offline-rate", c.offline_rate,
                 "chance per minute that the backend goes offline for 5-25 min (503 until then), [0, 1)")
      ->type_name("X")
      ->check(within(0.0, 1.0, true));
  cli.add_option("--reject-rate", c.reject_rate, "share of changes the backend answers 422, dead at once, [0, 1)")
      ->type_name("X")
      ->check(within(0.0, 1.0, true));
  cli.add_option("--latency-ms", c.latency_ms, "longest time the backend takes to answer a request, 0-1000 ms")
      ->type_name("MS")
      ->check(within(0, 1000));
  cli.add_option("--seed", c.seed, "seed of every random draw: the same seed gives the same counts")
      ->type_name("N")
      ->check(within(std::uint64_t{0}, std::numeric_limits<std::uint64_t>::max()));
  cli.add_option("--db", c.db, "SQLite database to use and keep (default: a temporary file, removed after)")
      ->type_name("PATH");
  cli.add_flag_function(
      "--no-crash", [&c](std::int64_t) { c.crash = false; },
      "do not kill and restart the app halfway through with a batch in flight")
      ->disable_flag_override();
  cli.add_flag("--quiet", c.quiet, "print only the final report")->disable_flag_override();
  return demo::parse(cli, argc, argv, [&] {
    if (c.failure_rate + c.reject_rate >= 1)
      throw CLI::ValidationError("--failure-rate, --reject-rate", "their sum must be below 1");
  });
}

// ---- processes ---------------------------------------------------------------------------------

/// A child process the driver started. It is stopped (with `stop_signal`) and reaped when this
/// object goes, whatever happened: nothing the demo starts outlives it.
class child {
 public:
  /// Starts `program` with `args`, its stdout on `out` (-1: the driver's own).
  child(const std::string& program, const std::vector<std::string>& args, int out, int stop_signal)
      : stop_signal_(stop_signal) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(program.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      if (out >= 0) ::dup2(out, STDOUT_FILENO);
      ::execv(program.c_str(), argv.data());
      std::cerr << "outbox_demo: cannot run " << program << ": " << std::strerror(errno) << '\n';
      ::_exit(127);
    }
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() {
    if (pid_ <= 0 || status_) return;
    ::kill(pid_, stop_signal_);
    wait();
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  /// Waits for the end; returns the wait status.
  int wait() {
    while (!status_) {
      int status = 0;
      if (::waitpid(pid_, &status, 0) == pid_) status_ = status;
      else if (errno != EINTR) status_ = -1;
    }
    return *status_;
  }

  [[nodiscard]] bool running() {
    if (status_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return !status_;
  }

  /// Sends `stop_signal` and waits.
  int stop() {
    if (!status_) ::kill(pid_, stop_signal_);
    return wait();
  }

 private:
  pid_t pid_ = -1;
  int stop_signal_;
  std::optional<int> status_;
};

/// How a child ended, in words.
std::string ending(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

/// Lines from a pipe, with a timeout.
class line_reader {
 public:
  explicit line_reader(int fd) : fd_(fd) {}
  line_reader(const line_reader&) = delete;
  line_reader& operator=(const line_reader&) = delete;
  ~line_reader() { ::close(fd_); }

  /// The next line, or nothing if none came within `timeout` or the writer closed the pipe.
  std::optional<std::string> next(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (const auto end = buffer_.find('\n'); end != std::string::npos) {
        std::string line = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        return line;
      }
      if (closed_) return std::nullopt;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[512];
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n > 0) buffer_.append(chunk, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EINTR) closed_ = true;
    }
  }

  [[nodiscard]] bool closed() const noexcept { return closed_ && buffer_.find('\n') == std::string::npos; }

 private:
  int fd_;
  std::string buffer_;
  bool closed_ = false;
};

// ---- the backend's view ------------------------------------------------------------------------

struct backend_view {
  std::map<std::string, std::size_t> counts;  // requests, stored, duplicates, failed, offline, rejected, held
  std::map<std::string, std::int64_t> first_at;  // Idempotency-Key -> first arrival, simulated seconds

  static std::optional<backend_view> read(const std::string& text) {
    backend_view v;
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
      if (word == "key") {
        std::string key;
        std::size_t copies = 0;
        std::int64_t at = 0;
        if (!(in >> key >> copies >> at)) return std::nullopt;
        v.first_at[key] = at;
      } else if (word == "held_at") {
        in >> word;
      } else {
        std::size_t n = 0;
        if (!(in >> n)) return std::nullopt;
        v.counts[word] = n;
      }
    }
    return v;
  }
  [[nodiscard]] std::size_t count(const std::string& what) const {
    const auto found = counts.find(what);
    return found == counts.end() ? 0 : found->second;
  }
};

// ---- the report --------------------------------------------------------------------------------

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  return values[index];
}

/// What the kill did, when there was one.
struct kill_record {
  bool by_sigkill = false;
  std::size_t in_flight = 0;
};

/// Joins the app's database with the backend's view, prints the report; true if nothing is
/// missing, stuck or unexplained.
bool report(const config& cfg, const std::string& db, const backend_view& backend,
            const std::optional<kill_record>& kill, double real_s) {
  auto storage = outbox::sqlite_storage::open(db);
  if (!storage) {
    std::cerr << "outbox_demo: cannot open " << db << ": " << storage.error().what() << '\n';
    return false;
  }
  const outbox::timestamp start = outbox::manual_clock().now();  // where the app's clock starts
  std::size_t events = 0, delivered = 0, dead = 0, stuck = 0, missing = 0, retried = 0;
  std::map<std::string, std::size_t> dead_reasons;
  std::set<std::string> collections, known;
  std::vector<double> latency_s;
  for (std::uint64_t after = 0;;) {
    const auto page = storage->query({.status_is = std::nullopt, .user_id = std::nullopt, .limit = 1000, .after_seq = after})
                          .value();
    if (page.empty()) break;
    for (const outbox::event& e : page) {
      ++events;
      after = e.seq;
      collections.insert(e.entity_type);
      const std::string key = e.id.to_string();
      known.insert(key);
      if (e.attempts > 1) retried += static_cast<std::size_t>(e.attempts - 1);
      const auto at_backend = backend.first_at.find(key);
      if (e.status == outbox::status::dead) {
        ++dead;
        ++dead_reasons[e.last_error];
        continue;
      }
      if (e.status != outbox::status::completed) ++stuck;
      if (at_backend == backend.first_at.end()) {
        ++missing;
        continue;
      }
      if (e.status == outbox::status::completed) ++delivered;
      const auto arrived = start + std::chrono::seconds(at_backend->second);
      latency_s.push_back(std::chrono::duration<double>(arrived - e.created_at).count());
    }
  }
  std::size_t unknown = 0;  // stored by the backend, never saved by the app
  for (const auto& [key, at] : backend.first_at) unknown += known.count(key) == 0 ? 1 : 0;
  std::size_t entities = 0, unexplained = 0;
  for (const std::string& collection : collections) {
    const auto rows = storage->query_entities({.collection = collection, .user_id = std::nullopt, .sync = std::nullopt,
                                               .from = std::nullopt, .until = std::nullopt, .limit = 1'000'000})
                          .value();
    for (const auto& row : rows) {
      ++entities;
      if (row.sync != outbox::sync_status::synced && row.sync_error.empty()) ++unexplained;
    }
  }

  const std::size_t duplicates = backend.count("duplicates");
  std::cout << std::fixed << std::setprecision(1);
  std::cout << "\n== outbox demo: " << cfg.users << " users, " << cfg.days << " simulated days, seed " << cfg.seed
            << " ==\n"
            << "saved            " << events << " changes of " << entities
            << " entities (natural keys merge repeats, unsent changes coalesce)\n"
            << "delivered        " << delivered << ", each stored once by the backend\n"
            << "duplicates       " << duplicates << " received by the backend (a key it already had)";
  if (kill) std::cout << "; " << kill->in_flight << " events were in flight at the kill";
  std::cout << '\n';
  if (kill)
    std::cout << "kill             the app process "
              << (kill->by_sigkill ? "ended by SIGKILL mid-batch" : "did NOT end by SIGKILL")
              << ", restarted on the same database\n";
  std::cout << "retried          " << retried << " attempts failed and were sent again (503s, offline windows"
            << (kill ? ", the kill" : "") << ")\n"
            << "dead             " << dead << '\n';
  for (const auto& [reason, n] : dead_reasons) std::cout << "                 " << n << " x " << reason << '\n';
  std::cout << "backend          " << backend.count("requests") << " requests: " << backend.count("stored")
            << " stored, " << duplicates << " duplicates, " << backend.count("failed") << " answered 503, "
            << backend.count("offline") << " while offline, " << backend.count("rejected") << " rejected\n"
            << "latency          p50 " << percentile(latency_s, 0.50) << " s, p90 " << percentile(latency_s, 0.90)
            << " s, p99 " << percentile(latency_s, 0.99) << " s (simulated time, save to first arrival)\n"
            << "throughput       " << static_cast<double>(backend.count("requests")) / real_s
            << " requests/s over HTTP (" << real_s << " s real)\n"
            << "missing          " << missing
            << (missing == 0 ? " - every saved change is at the backend or dead with a reason\n"
                             : " - SAVED CHANGES NOT AT THE BACKEND\n");
  if (stuck != 0) std::cout << "stuck            " << stuck << " events neither delivered nor dead\n";
  if (unknown != 0) std::cout << "unknown          " << unknown << " keys at the backend the app never saved\n";
  std::cout << "entities         " << entities - unexplained << " of " << entities
            << " synced or rejected with a reason\n";
  return missing == 0 && stuck == 0 && unknown == 0 && unexplained == 0 &&
         (!kill || (kill->by_sigkill && duplicates <= kill->in_flight));
}

// ---- the run -----------------------------------------------------------------------------------

int run(const config& cfg, const std::string& db) {
  const auto here = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  const std::string server_program = (here / "outbox_demo_server").string();
  const std::string app_program = (here / "outbox_demo_app").string();

  std::vector<std::string> server_args = {"--seed", std::to_string(cfg.seed), "--failure-rate",
                                          std::to_string(cfg.failure_rate), "--offline-rate",
                                          std::to_string(cfg.offline_rate), "--reject-rate",
                                          std::to_string(cfg.reject_rate), "--latency-ms",
                                          std::to_string(cfg.latency_ms)};
  if (cfg.crash) {
    server_args.push_back("--hold-from");
    server_args.push_back(std::to_string(demo::halfway_seconds(cfg.users, cfg.days)));
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::cerr << "outbox_demo: pipe: " << std::strerror(errno) << '\n';
    return 1;
  }
  line_reader from_server(pipe_fds[0]);
  child server(server_program, server_args, pipe_fds[1], SIGTERM);
  ::close(pipe_fds[1]);
  const auto listening = from_server.next(std::chrono::seconds(30));
  const std::string prefix = "listening on http://127.0.0.1:";
  if (!listening || listening->rfind(prefix, 0) != 0) {
    std::cerr << "outbox_demo: the backend did not start (" << ending(server.stop()) << ")\n";
    return 1;
  }
  const int port = std::atoi(listening->c_str() + prefix.size());
  const std::string base_url = "http://127.0.0.1:" + std::to_string(port);
  httplib::Client control("127.0.0.1", port);
  if (!cfg.quiet)
    std::cout << "backend on " << base_url << " (outbox_demo_server, pid " << server.pid() << "); app saving into "
              << db << std::endl;

  std::vector<std::string> app_args = {"--users", std::to_string(cfg.users), "--days", std::to_string(cfg.days),
                                       "--seed", std::to_string(cfg.seed), "--db", db, "--server", base_url + "/v1"};
  if (cfg.quiet) app_args.push_back("--quiet");
  const auto real_start = std::chrono::steady_clock::now();
  std::optional<kill_record> kill;
  std::optional<child> app;
  app.emplace(app_program, app_args, -1, SIGKILL);
  if (cfg.crash) {
    // The backend says when it holds the whole batch; the app is then waiting for its answers.
    std::optional<std::string> holding;
    while (!holding) {
      if (auto line = from_server.next(std::chrono::milliseconds(100)); line && line->rfind("holding ", 0) == 0)
        holding = std::move(line);
      else if (from_server.closed()) {
        std::cerr << "outbox_demo: the backend ended before it held a batch (" << ending(server.stop()) << ")\n";
        return 1;
      } else if (!app->running()) {
        const int status = app->wait();
        std::cerr << "outbox_demo: " << (status == 0 ? "no batch was held before the app ended" : "the app failed")
                  << " (" << ending(status) << ")\n";
        return 1;
      }
    }
    std::istringstream words(holding->substr(8));
    std::size_t in_flight = 0;
    std::int64_t at = 0;
    words >> in_flight >> at;
    ::kill(app->pid(), SIGKILL);
    const int status = app->wait();
    kill = kill_record{WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, in_flight};
    if (!control.Post("/release")) {
      std::cerr << "outbox_demo: the backend did not answer /release\n";
      return 1;
    }
    if (!cfg.quiet)
      std::cout << (::isatty(STDOUT_FILENO) ? "\n" : "") << "kill! the app (" << ending(status) << ") had " << in_flight
                << " events in flight at simulated second " << at << "; restarting it on the same database"
                << std::endl;
    app_args.push_back("--resume-at");
    app_args.push_back(std::to_string(at));
    app.emplace(app_program, app_args, -1, SIGKILL);
  }
  if (const int status = app->wait(); !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::cerr << "outbox_demo: the app failed (" << ending(status) << ")\n";
    return 1;
  }
  const double real_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - real_start).count();

  const auto answer = control.Get("/report");
  const auto view = answer && answer->status == 200 ? backend_view::read(answer->body) : std::nullopt;
  if (!view) {
    std::cerr << "outbox_demo: the backend gave no report\n";
    return 1;
  }
  if (const int status = server.stop(); !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::cerr << "outbox_demo: the backend did not stop cleanly (" << ending(status) << ")\n";
    return 1;
  }
  return report(cfg, db, *view, kill, real_s) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  if (const int code = parse(argc, argv, cfg); code >= 0) return code;
  std::optional<std::filesystem::path> temporary;
  if (cfg.db.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "outbox-demo-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::cerr << "outbox_demo: cannot make a temporary directory: " << std::strerror(errno) << '\n';
      return 1;
    }
    temporary = pattern;
    cfg.db = (*temporary / "app.db").string();
  }
  int code = 1;
  try {
    code = run(cfg, cfg.db);
  } catch (const std::exception& e) {
    std::cerr << "outbox_demo: " << e.what() << '\n';
  }
  if (temporary) std::filesystem::remove_all(*temporary);
  return code;
}
