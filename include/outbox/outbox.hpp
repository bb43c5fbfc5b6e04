#pragma once
/// \file
/// Everything the core ships, in one include: the `Outbox` engine, `Repository`, the in-memory
/// storage, the mock transport, the clocks and backoffs. Needs nothing beyond the standard library.
/// The SQLite storage lives in <outbox/storage/sqlite.hpp>, apart, because it links SQLite.

#include "outbox/backoff.hpp"
#include "outbox/clock.hpp"
#include "outbox/concepts.hpp"
#include "outbox/core.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/event_id.hpp"
#include "outbox/repository.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/memory.hpp"
#include "outbox/transport/mock.hpp"

namespace outbox {

/// An outbox whose events live in memory, delivered by `Transport`.
template <class Transport, class Clock = system_clock, class Backoff = exponential_backoff>
using memory_outbox = Outbox<memory_storage, Transport, Clock, Backoff>;

/// The composition most tests want: in memory, scripted transport, time that moves on demand.
using test_outbox = Outbox<memory_storage, mock_transport, manual_clock, exponential_backoff>;

}  // namespace outbox
