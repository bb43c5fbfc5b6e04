#pragma once
/// \file
/// Backoff policies: how long a failed event waits before its next attempt.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "outbox/clock.hpp"
#include "outbox/error.hpp"

namespace outbox {

/// How an exponential backoff spreads its delays so that many clients do not retry in step.
enum class jitter : std::uint8_t {
  none,   ///< exactly base * factor^(n-1), capped
  full,   ///< uniform in [0, d]
  equal,  ///< d/2 + uniform in [0, d/2]
};

/// base * factor^(n-1), capped, optionally jittered. The defaults reproduce the reference
/// design: 30 s, 60 s, 120 s, 240 s, 480 s, ... capped at 1 h, no jitter.
///
/// The jitter generator is seeded from `std::random_device` unless a seed is given: devices
/// of one fleet must not share a sequence, tests want a fixed one.
class exponential_backoff {
 public:
  struct config {
    duration base = std::chrono::seconds(30);
    double factor = 2.0;
    duration cap = std::chrono::hours(1);
    outbox::jitter jitter = jitter::none;
    std::optional<std::uint64_t> seed{};
  };

  exponential_backoff() : exponential_backoff(config{}) {}

  /// Throws `outbox::exception` (invalid_argument) unless 0 < base <= cap and factor >= 1.
  explicit exponential_backoff(config c) : config_(c) {
    if (c.base <= duration::zero())
      detail::throw_invalid_argument("outbox::exponential_backoff: base must be positive");
    if (c.cap < c.base)
      detail::throw_invalid_argument("outbox::exponential_backoff: cap must be at least base");
    if (!(c.factor >= 1.0) || !std::isfinite(c.factor))
      detail::throw_invalid_argument("outbox::exponential_backoff: factor must be a finite number >= 1");
    state_ = c.seed ? *c.seed : std::random_device{}();
  }

  /// The delay after the `attempt`-th failure (1-based; values below 1 count as 1).
  [[nodiscard]] duration delay(int attempt) {
    const duration d = undithered(attempt);
    switch (config_.jitter) {
      case jitter::none: return d;
      case jitter::full: return uniform(d);
      case jitter::equal: return d / 2 + uniform(d - d / 2);
    }
    return d;
  }

  [[nodiscard]] duration max_delay() const noexcept { return config_.cap; }
  [[nodiscard]] const config& settings() const noexcept { return config_; }

 private:
  [[nodiscard]] duration undithered(int attempt) const {
    const int exponent = std::max(attempt, 1) - 1;
    // In floating point so that large attempt numbers saturate at the cap instead of overflowing.
    const double scaled = static_cast<double>(config_.base.count()) * std::pow(config_.factor, exponent);
    if (!(scaled < static_cast<double>(config_.cap.count()))) return config_.cap;
    return duration(static_cast<duration::rep>(scaled));
  }

  /// Uniform in [0, d], from a splitmix64 stream (small, copyable, good enough for jitter).
  [[nodiscard]] duration uniform(duration d) {
    if (d <= duration::zero()) return duration::zero();
    state_ += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    const auto span = static_cast<std::uint64_t>(d.count()) + 1;
    return duration(static_cast<duration::rep>(z % span));
  }

  config config_;
  std::uint64_t state_ = 0;
};

/// The same delay after every failure. States no cap: a server's retry-after hint is then
/// bounded by `outbox::options::max_retry_delay`.
class fixed_backoff {
 public:
  explicit fixed_backoff(duration delay = std::chrono::seconds(30)) : delay_(delay) {
    if (delay < duration::zero())
      detail::throw_invalid_argument("outbox::fixed_backoff: delay must not be negative");
  }
  [[nodiscard]] duration delay(int /*attempt*/) const noexcept { return delay_; }

 private:
  duration delay_;
};

/// Retry at once: for tests, and transports that pace themselves. A server's hint still
/// applies, bounded by `outbox::options::max_retry_delay`.
struct no_backoff {
  [[nodiscard]] duration delay(int /*attempt*/) const noexcept { return duration::zero(); }
};

}  // namespace outbox
