// The main demo: a health-tracking app simulated over several days. Users take turns on one
// device (only the logged-in user's data syncs), saving hourly steps, heart-rate samples and a
// daily weight through repositories into an embedded SQLite database, while the backend
// misbehaves: random 503s, offline windows, a few permanent rejections. Time is simulated (a
// manual clock), so days pass in seconds; every write is really committed and synced.
//
// It ends with an audit: every saved event must be delivered or dead with a reason, and every
// entity synced or carrying the reason it is not; it exits non-zero otherwise.
//
//   outbox_demo [--users N] [--days N] [--failure-rate X] [--offline-rate X] [--reject-rate X]
//               [--seed N] [--db PATH] [--no-crash] [--quiet]
#include <outbox/outbox.hpp>
#include <outbox/storage/sqlite.hpp>

#include <cstdio>
#include <unistd.h>
#include <filesystem>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct config {
  int users = 3;
  int days = 3;
  double failure_rate = 0.10;   // retryable 503s
  double offline_rate = 0.02;   // chance per minute that the network drops for a while
  double reject_rate = 0.002;   // permanent 422s
  std::uint64_t seed = 7;
  std::string db;  // empty: a fresh file in the temp directory, removed at the end
  bool crash = true;  // die mid-batch halfway through, and restart
  bool quiet = false;
};

// The app's entities: plain structs; the repository reads id, user_id, collection, the
// serialiser and the natural key from their members.
struct hourly_steps {
  static constexpr std::string_view collection = "steps";
  std::string id, user_id, hour;  // hour: "d0h13"
  int steps = 0;
  [[nodiscard]] std::string natural_key() const { return hour; }
  [[nodiscard]] std::string to_payload() const {
    return R"({"user":")" + user_id + R"(","hour":")" + hour + R"(","steps":)" + std::to_string(steps) + "}";
  }
  static hourly_steps from_payload(std::string_view) { return {}; }  // the demo never reads back
};

struct heart_rate {
  static constexpr std::string_view collection = "heart_rate";
  std::string id, user_id, minute;
  int bpm = 0;
  [[nodiscard]] std::string natural_key() const { return minute; }
  [[nodiscard]] std::string to_payload() const {
    return R"({"user":")" + user_id + R"(","minute":")" + minute + R"(","bpm":)" + std::to_string(bpm) + "}";
  }
  static heart_rate from_payload(std::string_view) { return {}; }
};

struct weight {
  static constexpr std::string_view collection = "weight";
  std::string id, user_id, day;
  double kg = 0;
  [[nodiscard]] std::string natural_key() const { return day; }
  [[nodiscard]] std::string to_payload() const {
    return R"({"user":")" + user_id + R"(","day":")" + day + R"(","kg":)" + std::to_string(kg) + "}";
  }
  static weight from_payload(std::string_view) { return {}; }
};

[[noreturn]] void usage(int code) {
  std::cout << "usage: outbox_demo [--users N] [--days N] [--failure-rate X] [--offline-rate X]\n"
               "                   [--reject-rate X] [--seed N] [--db PATH] [--no-crash] [--quiet]\n";
  std::exit(code);
}

config parse(int argc, char** argv) {
  config c;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    try {
      if (arg == "--users") c.users = std::stoi(next());
      else if (arg == "--days") c.days = std::stoi(next());
      else if (arg == "--failure-rate") c.failure_rate = std::stod(next());
      else if (arg == "--offline-rate") c.offline_rate = std::stod(next());
      else if (arg == "--reject-rate") c.reject_rate = std::stod(next());
      else if (arg == "--seed") c.seed = std::stoull(next());
      else if (arg == "--db") c.db = next();
      else if (arg == "--quiet") c.quiet = true;
      else if (arg == "--no-crash") c.crash = false;
      else if (arg == "--help" || arg == "-h") usage(0);
      else usage(2);
    } catch (const std::exception&) {
      usage(2);
    }
  }
  if (c.users < 1 || c.days < 1 || c.failure_rate < 0 || c.failure_rate >= 1 || c.offline_rate < 0 ||
      c.offline_rate >= 1 || c.reject_rate < 0 || c.reject_rate + c.failure_rate >= 1)
    usage(2);
  return c;
}

/// A number in [0, 1) fixed by the event and attempt, so a run is reproducible from its seed.
double chance(const outbox::event& e, std::uint64_t seed) {
  std::uint64_t z = e.id.low ^ (e.id.high * 31) ^ (static_cast<std::uint64_t>(e.attempts) << 56) ^ seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) / 9007199254740992.0;
}

template <class Entity>
using template_repository =
    outbox::Repository<Entity, outbox::sqlite_storage, outbox::coalesce_unsent, outbox::manual_clock>;

using demo_outbox = outbox::Outbox<outbox::sqlite_storage, outbox::mock_transport, outbox::manual_clock>;

/// What lives in the app's process: the outbox and the repositories sharing its database.
struct app {
  demo_outbox box;
  template_repository<hourly_steps> steps{box};
  template_repository<heart_rate> heart{box};
  template_repository<weight> weights{box};
  app(outbox::sqlite_storage storage, outbox::mock_transport backend, outbox::manual_clock clock,
      outbox::exponential_backoff backoff, outbox::options options)
      : box(std::move(storage), std::move(backend), std::move(clock), std::move(backoff), options) {}
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  return values[index];
}

int simulate(const config& cfg, const std::string& path) {
  const auto real_start = std::chrono::steady_clock::now();

  outbox::manual_clock clock;
  outbox::mock_transport backend;
  backend.set_script([&](const outbox::event& e, std::size_t) -> std::optional<outbox::delivery_result> {
    const double u = chance(e, cfg.seed);
    if (u < cfg.reject_rate) return outbox::delivery_result::permanent("422 " + e.type + " failed validation");
    if (u < cfg.reject_rate + cfg.failure_rate) return outbox::delivery_result::retryable("503 service unavailable");
    return std::nullopt;  // delivered
  });

  std::size_t retried = 0;
  std::map<std::string, std::size_t> dead_reasons;
  std::vector<double> latency_s;

  // The app's process: the outbox and its repositories over the database file. It can die
  // (the object is dropped without stopping or recording anything) and start again.
  std::optional<app> a;
  auto start_app = [&]() -> bool {
    auto storage = outbox::sqlite_storage::open(path);
    if (!storage) {
      std::cerr << "cannot open " << path << ": " << storage.error().what() << '\n';
      return false;
    }
    outbox::options options;  // the reference design: batches of 10, polling every 30 s
    a.emplace(std::move(*storage), backend, clock,
              outbox::exponential_backoff({.jitter = outbox::jitter::equal, .seed = cfg.seed}), options);
    a->box.on_failed([&](const outbox::event&, const outbox::delivery_result&) { ++retried; });
    a->box.on_dead([&](const outbox::event& e, const outbox::delivery_result&) { ++dead_reasons[e.last_error]; });
    a->box.on_delivered([&](const outbox::event& e, const outbox::delivery_result&) {
      latency_s.push_back(std::chrono::duration<double>(e.completed_at - e.created_at).count());
    });
    return true;
  };
  if (!start_app()) return 2;

  std::mt19937_64 rng(cfg.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<outbox::event_id> saved;
  std::size_t save_calls = 0;
  auto remember = [&](auto result) {
    ++save_calls;
    const outbox::event_id id = result.value().event;  // a failed save would throw: the demo wants to know
    if (saved.empty() || saved.back() != id) saved.push_back(id);  // a coalesced save keeps its event
  };

  // One poll interval of the device's life: maybe drop the network, then sync what is due.
  int offline_minutes = 0;
  auto tick = [&] {
    clock.advance(30s);
    if (offline_minutes > 0) --offline_minutes;
    else if (unit(rng) < cfg.offline_rate / 2) offline_minutes = 2 * (5 + static_cast<int>(unit(rng) * 20));
    backend.set_offline(offline_minutes > 0);
    // Drain what is due, but stop at the first offline answer, as the background runner does:
    // re-sending into a dead network only burns commits.
    for (int batches = 0; batches < 20; ++batches) {
      const auto report = a->box.process_once();
      if (report.claimed == 0 || report.unavailable == report.claimed) break;
    }
  };

  // A live progress bar on a terminal; one line a day otherwise.
  const bool progress_line = !cfg.quiet && ::isatty(STDOUT_FILENO);
  std::size_t crash_in_flight = 0;
  auto show_progress = [&](int day, int hour) {
    const auto s = a->box.stats().value();
    const int done = (day * 24 + hour + 1) * 30 / (cfg.days * 24);
    std::cout << "\r day " << day + 1 << "/" << cfg.days << " [" << std::string(static_cast<std::size_t>(done), '#')
              << std::string(static_cast<std::size_t>(30 - done), '.') << "] " << s.count(outbox::status::completed)
              << " delivered, " << s.count(outbox::status::pending) + s.count(outbox::status::failed)
              << " waiting, " << s.count(outbox::status::dead) << " dead   " << std::flush;
  };
  const int minutes_per_user = 60 / cfg.users;
  for (int day = 0; day < cfg.days; ++day) {
    for (int hour = 0; hour < 24; ++hour) {
      for (int u = 0; u < cfg.users; ++u) {
        const std::string user = "user-" + std::to_string(u + 1);
        a->box.set_user(user);  // this user's turn on the device: only their events sync
        const std::string when = "d" + std::to_string(day) + "h" + std::to_string(hour);
        // The step counter reports the hour twice: the second save updates the same entity.
        int count = static_cast<int>(unit(rng) * 2000);
        remember(a->steps.save({.id = "", .user_id = user, .hour = when, .steps = count}));
        for (int sample = 0; sample < 6; ++sample) {
          const int bpm = 55 + static_cast<int>(unit(rng) * 40);
          remember(a->heart.save({.id = "", .user_id = user, .minute = when + "m" + std::to_string(sample * 10), .bpm = bpm}));
        }
        if (cfg.crash && day == cfg.days / 2 && hour == 12 && u == 0) {
          // The crash: a batch reaches the backend, then the process dies before it records the
          // answers. On restart those events are still "processing"; the outbox releases the
          // dead run's claims and sends them again: at-least-once, the event id lets the backend
          // drop the repeats.
          backend.set_offline(false);
          std::vector<outbox::event> in_flight;
          const auto now = clock.now();
          (void)a->box.storage().claim({user, now, now + std::chrono::minutes(2), 10}, in_flight);
          std::vector<outbox::delivery_result> answers(in_flight.size());
          backend.send(in_flight, answers);
          crash_in_flight = in_flight.size();
          a.reset();  // no stop(), no record(): gone
          if (!start_app()) return 2;
          a->box.set_user(user);
          if (!cfg.quiet)
            std::cout << (progress_line ? "\n" : "") << "crash! restarted with " << crash_in_flight
                      << " events in flight\n";
        }
        if (hour == 7) {
          remember(a->weights.save({.id = "", .user_id = user, .day = "d" + std::to_string(day), .kg = 71.4}));
        }
        if (progress_line) show_progress(day, hour);
        for (int t = 0; t < 2 * minutes_per_user; ++t) {
          if (t == minutes_per_user) {
            count += static_cast<int>(unit(rng) * 300);
            remember(a->steps.save({.id = "", .user_id = user, .hour = when, .steps = count}));
          }
          tick();
        }
      }
    }
    if (!cfg.quiet && !progress_line) {
      const auto s = a->box.stats().value();
      std::cout << "day " << day + 1 << ": " << saved.size() << " saved, " << s.count(outbox::status::completed)
                << " delivered, " << s.count(outbox::status::pending) + s.count(outbox::status::failed)
                << " waiting, " << s.count(outbox::status::dead) << " dead\n";
    }
  }

  if (progress_line) std::cout << '\n';
  // Every user logs in once more and stays until their events are through (or dead).
  backend.set_offline(false);
  offline_minutes = 0;
  for (int u = 0; u < cfg.users; ++u) {
    const std::string user = "user-" + std::to_string(u + 1);
    a->box.set_user(user);
    for (int t = 0; t < 24 * 120; ++t) {
      const auto s = a->box.stats(user).value();
      if (s.count(outbox::status::pending) + s.count(outbox::status::failed) + s.count(outbox::status::processing) == 0)
        break;
      clock.advance(30s);
      while (a->box.process_once().claimed > 0) {  // online now: every claim makes progress
      }
    }
  }

  // The audit: nothing acknowledged may be missing or stuck.
  std::size_t delivered = 0, dead = 0, missing = 0;
  for (const auto& id : saved) {
    const auto found = a->box.find(id).value();
    if (!found) ++missing;
    else if (found->status == outbox::status::completed) ++delivered;
    else if (found->status == outbox::status::dead) ++dead;
    else ++missing;
  }
  // And every entity is synced, or says why not.
  std::size_t entities = 0, unexplained = 0;
  auto audit = [&](auto& repository) {
    for (const auto& row : repository.query({.user_id = std::nullopt, .sync = std::nullopt, .from = std::nullopt,
                                             .until = std::nullopt, .limit = 1'000'000}).value()) {
      ++entities;
      if (row.sync != outbox::sync_status::synced && row.sync_error.empty()) ++unexplained;
    }
  };
  audit(a->steps);
  audit(a->heart);
  audit(a->weights);
  const double real_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - real_start).count();

  std::cout << std::fixed << std::setprecision(1);
  std::cout << "\n== outbox demo: " << cfg.users << " users, " << cfg.days << " simulated days, SQLite at " << path
            << " ==\n"
            << "saved            " << save_calls << " saves of " << entities << " entities (natural keys merge repeats)\n"
            << "events           " << saved.size() << " (unsent changes coalesce into one event)\n"
            << "delivered        " << delivered << '\n'
            << "retries          " << retried << " (503s and offline windows; offline uses no attempt)\n"
            << "dead             " << dead << '\n';
  for (const auto& [reason, n] : dead_reasons) std::cout << "                 " << n << " x " << reason << '\n';
  const std::size_t duplicates = backend.duplicates();
  std::cout << "duplicates       " << duplicates << " seen by the backend ("
            << (cfg.crash ? std::to_string(crash_in_flight) + " were in flight at the crash: up to that many expected"
                          : std::string("0 expected without a crash"))
            << ")\n"
            << "latency          p50 " << percentile(latency_s, 0.50) << " s, p90 " << percentile(latency_s, 0.90)
            << " s, p99 " << percentile(latency_s, 0.99) << " s (simulated time, save to delivery)\n"
            << "throughput       " << static_cast<double>(saved.size()) / real_s << " events/s (" << real_s
            << " s real)\n"
            << "missing          " << missing << (missing == 0 ? " - nothing lost\n" : " - EVENTS LOST\n")
            << "entities         " << entities - unexplained << " of " << entities
            << " synced or rejected with a reason\n";
  return missing == 0 && unexplained == 0 && duplicates <= crash_in_flight ? 0 : 1;
}

void remove_database(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const config cfg = parse(argc, argv);
  const bool temporary = cfg.db.empty();
  const std::string path =
      temporary ? (std::filesystem::temp_directory_path() / ("outbox-demo-" + std::to_string(cfg.seed) + ".db")).string()
                : cfg.db;
  if (temporary) remove_database(path);
  const int code = simulate(cfg, path);  // the database is closed when it returns
  if (temporary) remove_database(path);
  return code;
}
