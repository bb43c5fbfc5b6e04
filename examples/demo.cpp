// The main demo: a health-tracking app simulated over several days. Users take turns on one
// device (only the logged-in user's data syncs), saving hourly steps, heart-rate samples and a
// daily weight through repositories into an embedded SQLite database, while the backend
// misbehaves: random 503s, offline windows, a few permanent rejections. Time is simulated (a
// manual clock), so days pass in seconds; every write is really committed and synced.
//
// A run is reproducible from its seed: every random draw comes from the seed and the position
// of what it decides in the simulation (the n-th event saved, its attempt; the n-th poll), never
// from event ids or the time, so the same flags give the same counts; only the wall-clock
// figures (throughput) differ.
//
// It ends with an audit: every saved event must be delivered or dead with a reason, and every
// entity synced or carrying the reason it is not; each day's line must account for every
// event. It exits 1 otherwise, and 2 on a bad flag (`outbox_demo --help` lists them).
#include <outbox/outbox.hpp>
#include <outbox/storage/sqlite.hpp>

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct config {
  int users = 3;
  int days = 3;
  double failure_rate = 0.10;  // retryable 503s
  double offline_rate = 0.02;  // chance per minute that the network drops for a while
  double reject_rate = 0.002;  // permanent 422s
  std::uint64_t seed = 7;
  std::string db;      // empty: a fresh file in the temp directory, removed at the end
  bool crash = true;   // die mid-batch halfway through, and restart
  bool quiet = false;
};

// ---- the flags ---------------------------------------------------------------------------------

/// A CLI11 check that a flag's value is a number of type `Number` from `low` to `high` (`high`
/// itself excluded when `below_high`). Every refusal says what was expected and what came.
template <class Number>
CLI::Validator within(Number low, Number high, bool below_high = false) {
  return CLI::Validator(
             [=](std::string& text) -> std::string {
               Number value{};
               const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
               if (ec != std::errc() || end != text.data() + text.size() || text.empty())
                 return std::string(std::is_integral_v<Number> ? "expected a whole number" : "expected a number") +
                        ", got '" + text + "'";
               std::ostringstream bounds;
               bounds << "must be at least " << low << (below_high ? " and below " : " and at most ") << high;
               if (value < low || value > high || (below_high && value == high)) return bounds.str() + ", got " + text;
               return {};
             },
             "")
      .name("within");
}

/// Parses the command line into `c`; returns the exit code when the demo must not run (0 after
/// --help, 2 after a bad flag, named with its reason on stderr).
std::optional<int> parse(int argc, char** argv, config& c) {
  CLI::App cli("A health app syncing through a misbehaving backend over simulated days.", "outbox_demo");
  cli.option_defaults()->always_capture_default();
  cli.add_option("--users", c.users, "users taking turns on the device, 1-1000")
      ->type_name("N")
      ->check(within(1, 1000));
  cli.add_option("--days", c.days, "simulated days, 1-3650")->type_name("N")->check(within(1, 3650));
  cli.add_option("--failure-rate", c.failure_rate, "share of deliveries answered 503 and retried, [0, 1)")
      ->type_name("X")
      ->check(within(0.0, 1.0, true));
  cli.add_option("--offline-rate", c.offline_rate, "chance per minute that the network drops for 5-25 min, [0, 1)")
      ->type_name("X")
      ->check(within(0.0, 1.0, true));
  cli.add_option("--reject-rate", c.reject_rate, "share of deliveries answered 422, dead at once, [0, 1)")
      ->type_name("X")
      ->check(within(0.0, 1.0, true));
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
  try {
    cli.parse(argc, argv);
    if (c.failure_rate + c.reject_rate >= 1)
      throw CLI::ValidationError("--failure-rate, --reject-rate", "their sum must be below 1");
  } catch (const CLI::CallForHelp&) {
    std::cout << cli.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "outbox_demo: " << e.what() << "\nRun with --help for the flags.\n";
    return 2;
  }
  return std::nullopt;
}

// ---- reproducible draws --------------------------------------------------------------------------

/// A number in [0, 1) fixed by the seed, a stream (what is being decided) and two positions in
/// the simulation: the same inputs always give the same number.
double draw(std::uint64_t seed, std::uint64_t stream, std::uint64_t position, std::uint64_t attempt = 0) {
  auto mix = [](std::uint64_t z) {  // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  std::uint64_t z = mix(seed + 0x9E3779B97F4A7C15ULL);
  for (const std::uint64_t part : {stream, position, attempt}) z = mix(z ^ (part + 0x9E3779B97F4A7C15ULL));
  return static_cast<double>(z >> 11) / 9007199254740992.0;
}

/// What each draw decides.
enum stream : std::uint64_t { backend_answer = 1, network_drop, drop_length, step_count, extra_steps, heart_beat };

/// Numbers every saved event in save order, which is the same on every run; a coalesced save
/// keeps its event and so its number.
class event_numbers {
 public:
  std::size_t remember(outbox::event_id id) { return numbers_.try_emplace(id, numbers_.size()).first->second; }
  [[nodiscard]] std::size_t of(outbox::event_id id) const { return numbers_.at(id); }
  [[nodiscard]] std::size_t size() const { return numbers_.size(); }
  [[nodiscard]] std::vector<outbox::event_id> ids() const {
    std::vector<outbox::event_id> all(numbers_.size());
    for (const auto& [id, n] : numbers_) all[n] = id;
    return all;
  }

 private:
  std::map<outbox::event_id, std::size_t> numbers_;
};

// ---- the backend -------------------------------------------------------------------------------

/// The backend's faults: its answer to an event is drawn from the event's number and attempt.
struct flaky_backend {
  const config& cfg;
  const event_numbers& numbers;

  [[nodiscard]] std::optional<outbox::delivery_result> answer(const outbox::event& e) const {
    const double u = draw(cfg.seed, backend_answer, numbers.of(e.id), static_cast<std::uint64_t>(e.attempts));
    if (u < cfg.reject_rate) return outbox::delivery_result::permanent("422 " + e.type + " failed validation");
    if (u < cfg.reject_rate + cfg.failure_rate) return outbox::delivery_result::retryable("503 service unavailable");
    return std::nullopt;  // delivered
  }
};

// ---- the app -----------------------------------------------------------------------------------

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

template <class Entity>
using demo_repository =
    outbox::Repository<Entity, outbox::sqlite_storage, outbox::coalesce_unsent, outbox::manual_clock>;

using demo_outbox = outbox::Outbox<outbox::sqlite_storage, outbox::mock_transport, outbox::manual_clock>;

/// What lives in the app's process: the outbox and the repositories sharing its database.
struct app {
  demo_outbox box;
  demo_repository<hourly_steps> steps{box};
  demo_repository<heart_rate> heart{box};
  demo_repository<weight> weights{box};
  app(outbox::sqlite_storage storage, outbox::mock_transport backend, outbox::manual_clock clock,
      outbox::exponential_backoff backoff, outbox::options options)
      : box(std::move(storage), std::move(backend), std::move(clock), std::move(backoff), options) {}
};

// ---- the report --------------------------------------------------------------------------------

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  return values[index];
}

/// Where every saved event stands: the parts must add up to the events the app saved.
struct tally {
  std::size_t events = 0, delivered = 0, waiting = 0, retrying = 0, in_flight = 0, dead = 0;

  static tally of(const outbox::event_stats& s, std::size_t events) {
    using outbox::status;
    return {events, s.count(status::completed), s.count(status::pending), s.count(status::failed),
            s.count(status::processing), s.count(status::dead)};
  }
  [[nodiscard]] std::size_t unaccounted() const {
    const std::size_t known = delivered + waiting + retrying + in_flight + dead;
    return known > events ? known - events : events - known;
  }
  [[nodiscard]] std::string line() const {
    std::ostringstream out;
    out << events << " events: " << delivered << " delivered, " << waiting << " waiting, " << retrying
        << " waiting to retry, " << in_flight << " in flight, " << dead << " dead";
    if (unaccounted() != 0) out << ", " << unaccounted() << " UNACCOUNTED";
    return out.str();
  }
};

// ---- the simulation ----------------------------------------------------------------------------

int simulate(const config& cfg, const std::string& path) {
  const auto real_start = std::chrono::steady_clock::now();

  event_numbers numbers;
  const flaky_backend faults{cfg, numbers};
  outbox::manual_clock clock;
  outbox::mock_transport backend;
  backend.set_script([&](const outbox::event& e, std::size_t) { return faults.answer(e); });

  std::size_t retried = 0;
  std::map<std::string, std::size_t> dead_reasons;
  std::vector<double> latency_s;

  // The app's process: the outbox and its repositories over the database file. It can die
  // (the object is dropped without stopping or recording anything) and start again.
  std::optional<app> a;
  auto start_app = [&]() -> bool {
    auto storage = outbox::sqlite_storage::open(path);
    if (!storage) {
      std::cerr << "outbox_demo: cannot open " << path << ": " << storage.error().what() << '\n';
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

  std::size_t save_calls = 0;
  auto remember = [&](auto result) {
    ++save_calls;
    numbers.remember(result.value().event);  // a failed save would throw: the demo wants to know
  };
  std::size_t unaccounted = 0;
  auto take_tally = [&] {
    const tally t = tally::of(a->box.stats().value(), numbers.size());
    unaccounted += t.unaccounted();
    return t;
  };

  // One poll interval of the device's life: maybe drop the network, then sync what is due.
  std::uint64_t polls = 0;
  int offline_minutes = 0;
  auto tick = [&] {
    clock.advance(30s);
    ++polls;
    if (offline_minutes > 0) --offline_minutes;
    else if (draw(cfg.seed, network_drop, polls) < cfg.offline_rate / 2)
      offline_minutes = 2 * (5 + static_cast<int>(draw(cfg.seed, drop_length, polls) * 20));
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
    const tally t = take_tally();
    const int done = (day * 24 + hour + 1) * 30 / (cfg.days * 24);
    std::cout << "\r day " << day + 1 << "/" << cfg.days << " [" << std::string(static_cast<std::size_t>(done), '#')
              << std::string(static_cast<std::size_t>(30 - done), '.') << "] " << t.delivered << " delivered, "
              << t.waiting + t.retrying + t.in_flight << " waiting, " << t.dead << " dead   " << std::flush;
  };
  const int minutes_per_user = 60 / cfg.users;
  std::uint64_t turn = 0;  // the n-th user turn: the position of the app's own draws
  for (int day = 0; day < cfg.days; ++day) {
    for (int hour = 0; hour < 24; ++hour) {
      for (int u = 0; u < cfg.users; ++u, ++turn) {
        const std::string user = "user-" + std::to_string(u + 1);
        a->box.set_user(user);  // this user's turn on the device: only their events sync
        const std::string when = "d" + std::to_string(day) + "h" + std::to_string(hour);
        // The step counter reports the hour twice: the second save updates the same entity.
        int count = static_cast<int>(draw(cfg.seed, step_count, turn) * 2000);
        remember(a->steps.save({.id = "", .user_id = user, .hour = when, .steps = count}));
        for (int sample = 0; sample < 6; ++sample) {
          const double beat = draw(cfg.seed, heart_beat, turn, static_cast<std::uint64_t>(sample));
          const int bpm = 55 + static_cast<int>(beat * 40);
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
            count += static_cast<int>(draw(cfg.seed, extra_steps, turn) * 300);
            remember(a->steps.save({.id = "", .user_id = user, .hour = when, .steps = count}));
          }
          tick();
        }
      }
    }
    const tally t = take_tally();  // checked every day, printed unless quiet
    if (!cfg.quiet && !progress_line) std::cout << "day " << day + 1 << ": " << t.line() << '\n';
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
  const tally end = take_tally();

  // The audit: nothing acknowledged may be missing or stuck.
  std::size_t delivered = 0, dead = 0, missing = 0;
  for (const auto& id : numbers.ids()) {
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
  std::cout << "\n== outbox demo: " << cfg.users << " users, " << cfg.days << " simulated days, seed " << cfg.seed
            << " ==\n"
            << "saved            " << save_calls << " saves of " << entities << " entities (natural keys merge repeats)\n"
            << "events           " << numbers.size() << " (unsent changes coalesce into one event)\n"
            << "at the end       " << end.line() << '\n'
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
            << "throughput       " << static_cast<double>(numbers.size()) / real_s << " events/s (" << real_s
            << " s real)\n"
            << "missing          " << missing << (missing == 0 ? " - nothing lost\n" : " - EVENTS LOST\n")
            << "accounted        " << (unaccounted == 0 ? "every event, every day\n" : "NO: events unaccounted for\n")
            << "entities         " << entities - unexplained << " of " << entities
            << " synced or rejected with a reason\n";
  const bool ok = missing == 0 && unaccounted == 0 && unexplained == 0 && duplicates <= crash_in_flight;
  return ok ? 0 : 1;
}

void remove_database(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  if (const auto code = parse(argc, argv, cfg)) return *code;
  const bool temporary = cfg.db.empty();
  // One file per process, so runs side by side (the tests) do not meet.
  const std::string path =
      temporary
          ? (std::filesystem::temp_directory_path() / ("outbox-demo-" + std::to_string(::getpid()) + ".db")).string()
          : cfg.db;
  if (temporary) remove_database(path);
  const int code = simulate(cfg, path);  // the database is closed when it returns
  if (temporary) remove_database(path);
  return code;
}
