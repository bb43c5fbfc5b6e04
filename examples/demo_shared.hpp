// What the main demo's three programs share: the driver (outbox_demo), the app
// (outbox_demo_app) and the backend (outbox_demo_server). Flag checks, the reproducible draws,
// the simulated time line and the headers by which the app tells the backend its clock and batch.
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace demo {

using namespace std::chrono_literals;

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

/// Parses the command line into the options `cli` was given, then runs `check_together` (which
/// throws a CLI::ParseError for flags that do not fit together). Returns the exit code when the
/// program must not run (0 after --help, 2 after a bad flag, named with its reason on stderr),
/// -1 when it may.
template <class Check>
int parse(CLI::App& cli, int argc, char** argv, const Check& check_together) {
  try {
    cli.parse(argc, argv);
    check_together();
  } catch (const CLI::CallForHelp&) {
    std::cout << cli.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << cli.get_name() << ": " << e.what() << "\nRun with --help for the flags.\n";
    return 2;
  }
  return -1;
}

// ---- reproducible draws --------------------------------------------------------------------------

/// A number in [0, 1) fixed by the seed, a stream (what is being decided) and two positions in
/// the simulation: the same inputs always give the same number.
inline double draw(std::uint64_t seed, std::uint64_t stream, std::uint64_t position, std::uint64_t attempt = 0) {
  auto mix = [](std::uint64_t z) {  // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  std::uint64_t z = mix(seed + 0x9E3779B97F4A7C15ULL);
  for (const std::uint64_t part : {stream, position, attempt}) z = mix(z ^ (part + 0x9E3779B97F4A7C15ULL));
  return static_cast<double>(z >> 11) / 9007199254740992.0;
}

/// What each draw decides: the app draws its users' data, the backend its faults.
enum stream : std::uint64_t {
  backend_answer = 1,
  network_drop,
  drop_length,
  step_count,
  extra_steps,
  heart_beat,
  latency,
};

/// A position for draws from text that is the same on every run (FNV-1a).
inline std::uint64_t position_of(std::string_view text) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

// ---- the simulated time line -------------------------------------------------------------------

/// The app polls every 30 s of simulated time; the backend's offline windows are counted in
/// the same polls.
inline constexpr std::chrono::seconds poll_interval = 30s;

/// Minutes of simulated time each user has the device per hour (at least one).
inline int minutes_per_user(int users) { return 60 / users; }

/// Seconds since the simulation's start at which the halfway user turn begins (day days/2,
/// 12:00, the first user): the first batch sent from then on is the one in flight at the kill.
inline std::int64_t halfway_seconds(int users, int days) {
  const std::int64_t turns = (static_cast<std::int64_t>(days / 2) * 24 + 12) * users;
  return turns * minutes_per_user(users) * 60;
}

// ---- what the app tells the backend besides the event ------------------------------------------

/// Seconds of simulated time since the simulation's start, when the request was sent.
inline constexpr const char* clock_header = "X-Demo-Clock";
/// "<n>/<size>": the request belongs to the app process's n-th batch, of `size` events.
inline constexpr const char* batch_header = "X-Demo-Batch";

}  // namespace demo
