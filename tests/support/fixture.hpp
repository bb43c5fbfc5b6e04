#pragma once
// The usual test composition: events in memory, a scripted backend, time that moves on demand.

#include <outbox/outbox.hpp>
#include <outbox/testing/faulty_storage.hpp>

#include <chrono>
#include <functional>
#include <thread>

namespace outbox_test {

using namespace std::chrono_literals;

template <class Storage = outbox::memory_storage>
struct basic_fixture {
  explicit basic_fixture(outbox::options options = {}) : box(Storage(), backend, clock, outbox::exponential_backoff(), options) {}

  outbox::manual_clock clock;
  outbox::mock_transport backend;
  outbox::Outbox<Storage, outbox::mock_transport, outbox::manual_clock> box;
  outbox::timestamp t0 = clock.now();

  outbox::event_id enqueue(std::string entity, std::string user = {}, int priority = outbox::priority::normal) {
    return box.enqueue({.type = "test.saved", .entity_id = std::move(entity), .payload = "{}",
                        .user_id = std::move(user), .priority = priority}).value();
  }
  outbox::event get(outbox::event_id id) { return box.find(id).value().value(); }
};

using fixture = basic_fixture<>;
using faulty_fixture = basic_fixture<outbox::testing::faulty_storage<outbox::memory_storage>>;

/// Waits, in real time, until `condition` holds; the timeout only bounds a failing test.
inline bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace outbox_test
