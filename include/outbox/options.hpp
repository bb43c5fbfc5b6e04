#pragma once
/// \file
/// The run-time settings of an `outbox::Outbox` (core.hpp) and the report of one processing cycle.

#include <chrono>
#include <cstddef>
#include <optional>

#include "outbox/clock.hpp"
#include "outbox/error.hpp"

namespace outbox {

/// Run-time settings. Checked when the outbox is constructed.
struct options {
  std::size_t batch_size = 10;                                  ///< events per claim
  duration poll_interval = std::chrono::seconds(30);            ///< longest sleep of the runner
  duration lease = std::chrono::minutes(2);                     ///< a claim's lifetime
  int max_attempts = 5;                                         ///< default for new events
  std::size_t max_payload_bytes = std::size_t{1} << 20;         ///< larger payloads are refused
  duration max_retry_delay = std::chrono::hours(1);             ///< bound for hints if the backoff has no cap
  /// This outbox is the only processor of its storage (the usual case; the file storage even
  /// enforces one owner). Claims found in flight when it first processes were then made by a
  /// process that died, and are released at once instead of after their lease. Set it to false
  /// when several processes deliver from one shared database.
  bool exclusive = true;
};

/// What one processing cycle did.
struct cycle_report {
  std::size_t claimed = 0;
  std::size_t delivered = 0;
  std::size_t retried = 0;      ///< failed, retry scheduled
  std::size_t dead = 0;
  std::size_t unavailable = 0;  ///< offline answers: back to pending, no attempt used
  std::size_t released = 0;     ///< claimed, then returned unsent because the user changed
  std::size_t stale = 0;        ///< results whose lease had expired meanwhile: not applied
  bool no_user = false;         ///< nothing done: no session is active
  std::optional<outbox::error> error;  ///< a storage failure that cut the cycle short
};

}  // namespace outbox
