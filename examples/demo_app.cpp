// The app process of the main demo (outbox_demo starts it): a health-tracking app whose users
// take turns on one device (only the logged-in user's data syncs), saving hourly steps,
// heart-rate samples and a daily weight through repositories into SQLite, and delivering them
// with outbox::http_transport to the demo's backend (outbox_demo_server). Time is simulated (a
// manual clock, a poll every 30 s), so days pass in seconds; every save is really committed and
// every delivery is a real HTTP request.
//
// Each request also carries the simulated time and the number and size of its batch, so the
// backend can keep its offline windows on the app's clock and hold one whole batch while the
// driver kills this process. Started again with --resume-at, the app goes through the
// simulation's schedule without saving until that time and carries on from there: what it saved
// before is in the database, and the batch that was in flight is sent again.
//
// Every value the app draws comes from the seed and the turn it belongs to, never from the time
// or event ids, so the same flags save the same changes in the same order.
//
// After each simulated day it checks that every event in the database is delivered, waiting,
// in flight or dead, and exits 1 at once if not; 2 on a bad flag or a database it cannot open.
#include "demo_shared.hpp"

#include <outbox/outbox.hpp>
#include <outbox/storage/sqlite.hpp>
#include <outbox/transport/http.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <utility>

namespace {

struct config {
  int users = 3;
  int days = 3;
  std::uint64_t seed = 7;
  std::string db;
  std::string server;  // the backend's base URL
  std::optional<std::int64_t> resume_at;
  bool quiet = false;
};

// ---- the app's entities ------------------------------------------------------------------------

// Plain structs; the repository reads id, user_id, collection, the serialiser and the natural
// key from their members. Ids are made from the user and the natural key, so they are the same
// on every run.
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

// ---- the transport -----------------------------------------------------------------------------

/// The batch being sent, as the request builder tags it.
struct batch_tag {
  std::uint64_t number = 0;
  std::size_t size = 0;
};

/// The HTTP transport, numbering the batches it is given.
struct numbered_http_transport {
  outbox::http_transport http;
  std::shared_ptr<batch_tag> tag;

  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) noexcept {
    ++tag->number;
    tag->size = batch.size();
    http.send(batch, results);
  }
};

template <class Entity>
using demo_repository =
    outbox::Repository<Entity, outbox::sqlite_storage, outbox::coalesce_unsent, outbox::manual_clock>;

using demo_outbox = outbox::Outbox<outbox::sqlite_storage, numbered_http_transport, outbox::manual_clock>;

/// What lives in the app's process: the outbox and the repositories sharing its database.
struct app {
  demo_outbox box;
  demo_repository<hourly_steps> steps{box};
  demo_repository<heart_rate> heart{box};
  demo_repository<weight> weights{box};
  app(outbox::sqlite_storage storage, numbered_http_transport backend, outbox::manual_clock clock,
      outbox::exponential_backoff backoff, outbox::options options)
      : box(std::move(storage), std::move(backend), std::move(clock), std::move(backoff), options) {}
};

/// Where every event in the database stands: the parts must add up to all of them.
struct tally {
  std::size_t events = 0, delivered = 0, waiting = 0, retrying = 0, in_flight = 0, dead = 0;

  static tally of(const outbox::event_stats& s, std::size_t events) {
    using outbox::status;
    return {events, s.count(status::completed), s.count(status::pending), s.count(status::failed),
            s.count(status::processing), s.count(status::dead)};
  }
  [[nodiscard]] bool adds_up() const { return delivered + waiting + retrying + in_flight + dead == events; }
  [[nodiscard]] std::string line() const {
    std::ostringstream out;
    out << events << " events: " << delivered << " delivered, " << waiting << " waiting, " << retrying
        << " waiting to retry, " << in_flight << " in flight, " << dead << " dead";
    if (!adds_up()) out << ", " << (delivered + waiting + retrying + in_flight + dead) << " ACCOUNTED FOR";
    return out.str();
  }
};

std::size_t total(const outbox::event_stats& s) {
  std::size_t n = 0;
  for (const std::size_t c : s.counts) n += c;
  return n;
}

// ---- the simulation ----------------------------------------------------------------------------

int simulate(const config& cfg) {
  auto storage = outbox::sqlite_storage::open(cfg.db);
  if (!storage) {
    std::cerr << "outbox_demo_app: cannot open " << cfg.db << ": " << storage.error().what() << '\n';
    return 2;
  }
  outbox::manual_clock clock;
  const outbox::timestamp start = clock.now();
  auto tag = std::make_shared<batch_tag>();

  outbox::http_options http;
  http.base_url = cfg.server;
  http.max_in_flight = 10;  // a whole batch at once (the outbox's default batch size)
  http.request = [tag, clock, start](const outbox::event& e, const outbox::http_options& o) {
    outbox::http_request r = outbox::default_http_request(e, o);
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(clock.now() - start).count();
    r.headers.emplace_back(demo::clock_header, std::to_string(seconds));
    r.headers.emplace_back(demo::batch_header, std::to_string(tag->number) + "/" + std::to_string(tag->size));
    return r;
  };
  auto transport = outbox::http_transport::make(std::move(http));
  if (!transport) {
    std::cerr << "outbox_demo_app: " << transport.error().what() << '\n';
    return 2;
  }
  outbox::options options;  // the reference design: batches of 10, polling every 30 s
  app a(std::move(*storage), numbered_http_transport{std::move(*transport), tag}, clock,
        outbox::exponential_backoff({.jitter = outbox::jitter::equal, .seed = cfg.seed}), options);

  // Events saved by an earlier run on this database, and the ones this run saves (a coalesced
  // save keeps its event).
  const std::size_t earlier = total(a.box.stats().value());
  std::set<outbox::event_id> saved;
  auto remember = [&](auto result) { saved.insert(result.value().event); };  // a failed save throws
  auto take_tally = [&] { return tally::of(a.box.stats().value(), earlier + saved.size()); };

  // Until the time to resume at, the schedule is only walked: that part was lived by the run
  // that was killed.
  bool replaying = cfg.resume_at.has_value();
  auto live = [&] {
    if (replaying && std::chrono::duration_cast<std::chrono::seconds>(clock.now() - start).count() >= *cfg.resume_at)
      replaying = false;
    return !replaying;
  };
  // Sends what is due, at most 20 batches a poll; stops early when the backend is unreachable.
  auto drain = [&] {
    for (int batches = 0; batches < 20; ++batches) {
      const auto report = a.box.process_once();
      if (report.claimed == 0 || report.unavailable == report.claimed) break;
    }
  };
  auto tick = [&] {
    clock.advance(demo::poll_interval);
    if (live()) drain();
  };

  // A live progress bar on a terminal; one line a day otherwise.
  const bool progress_line = !cfg.quiet && ::isatty(STDOUT_FILENO);
  auto show_progress = [&](int day, int hour) {
    const tally t = take_tally();
    const int done = (day * 24 + hour + 1) * 30 / (cfg.days * 24);
    std::cout << "\r day " << day + 1 << "/" << cfg.days << " [" << std::string(static_cast<std::size_t>(done), '#')
              << std::string(static_cast<std::size_t>(30 - done), '.') << "] " << t.delivered << " delivered, "
              << t.waiting + t.retrying + t.in_flight << " waiting, " << t.dead << " dead   " << std::flush;
  };
  const int minutes = demo::minutes_per_user(cfg.users);
  std::uint64_t turn = 0;  // the n-th user turn: the position of the app's own draws
  for (int day = 0; day < cfg.days; ++day) {
    for (int hour = 0; hour < 24; ++hour) {
      for (int u = 0; u < cfg.users; ++u, ++turn) {
        const std::string user = "user-" + std::to_string(u + 1);
        a.box.set_user(user);  // this user's turn on the device: only their events sync
        const std::string when = "d" + std::to_string(day) + "h" + std::to_string(hour);
        const bool saving = live();
        // The step counter reports the hour twice: the second save updates the same entity.
        int count = static_cast<int>(demo::draw(cfg.seed, demo::step_count, turn) * 2000);
        if (saving) {
          remember(a.steps.save({.id = user + "-" + when, .user_id = user, .hour = when, .steps = count}));
          for (int sample = 0; sample < 6; ++sample) {
            const auto beat = demo::draw(cfg.seed, demo::heart_beat, turn, static_cast<std::uint64_t>(sample));
            const std::string minute = when + "m" + std::to_string(sample * 10);
            remember(a.heart.save({.id = user + "-" + minute, .user_id = user, .minute = minute,
                                   .bpm = 55 + static_cast<int>(beat * 40)}));
          }
          if (hour == 7) {
            const std::string date = "d" + std::to_string(day);
            remember(a.weights.save({.id = user + "-" + date, .user_id = user, .day = date, .kg = 71.4}));
          }
        }
        if (progress_line && !replaying) show_progress(day, hour);
        for (int t = 0; t < 2 * minutes; ++t) {
          if (t == minutes) {
            count += static_cast<int>(demo::draw(cfg.seed, demo::extra_steps, turn) * 300);
            if (live()) remember(a.steps.save({.id = user + "-" + when, .user_id = user, .hour = when, .steps = count}));
          }
          tick();
        }
      }
    }
    if (replaying) continue;
    const tally t = take_tally();
    if (!t.adds_up()) {
      std::cout << (progress_line ? "\n" : "") << "day " << day + 1 << ": " << t.line() << '\n';
      return 1;
    }
    if (!cfg.quiet && !progress_line) std::cout << "day " << day + 1 << ": " << t.line() << std::endl;  // before a kill
  }
  if (progress_line) std::cout << '\n' << std::flush;

  // Every user logs in once more and stays until their events are through (or dead).
  for (int u = 0; u < cfg.users; ++u) {
    const std::string user = "user-" + std::to_string(u + 1);
    a.box.set_user(user);
    for (int t = 0; t < 24 * 120; ++t) {
      const auto s = a.box.stats(user).value();
      if (s.count(outbox::status::pending) + s.count(outbox::status::failed) + s.count(outbox::status::processing) == 0)
        break;
      clock.advance(demo::poll_interval);
      drain();
    }
  }
  return take_tally().adds_up() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  CLI::App cli("The app process of the outbox demo: saves into SQLite, delivers over HTTP.", "outbox_demo_app");
  cli.option_defaults()->always_capture_default();
  cli.add_option("--users", cfg.users, "users taking turns on the device, 1-60")
      ->type_name("N")
      ->check(demo::within(1, 60));
  cli.add_option("--days", cfg.days, "simulated days, 1-3650")->type_name("N")->check(demo::within(1, 3650));
  cli.add_option("--seed", cfg.seed, "seed of every value the app draws")
      ->type_name("N")
      ->check(demo::within(std::uint64_t{0}, std::numeric_limits<std::uint64_t>::max()));
  cli.add_option("--db", cfg.db, "the SQLite database (created if missing)")->type_name("PATH")->required();
  cli.add_option("--server", cfg.server, "the backend's base URL, e.g. http://127.0.0.1:8080/v1")
      ->type_name("URL")
      ->required();
  cli.add_option("--resume-at", cfg.resume_at,
                 "carry on from this simulated second after a crash (the schedule before it is not saved again)")
      ->type_name("SECONDS")
      ->check(demo::within(std::int64_t{0}, std::numeric_limits<std::int64_t>::max()));
  cli.add_flag("--quiet", cfg.quiet, "print nothing")->disable_flag_override();
  if (const int code = demo::parse(cli, argc, argv, [] {}); code >= 0) return code;
  return simulate(cfg);
}
