#pragma once
// What the benchmark binaries share: the workload (a pool of producer events spread over 1000
// entities), a transport that accepts everything, and the concurrent savers' loop. Each binary
// pairs these with its own baselines.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "outbox/outbox.hpp"

namespace outbox_bench {

inline constexpr std::size_t payload_bytes = 64;       // a typical small JSON body, past the SSO buffer
inline constexpr std::size_t entity_count = 1000;      // distinct ordering keys: per-key lines matter
inline constexpr std::size_t rebuild_every = 100'000;  // enqueue: start afresh after this many events
inline constexpr std::size_t drain_batch = 100;        // options.batch_size of the drain benchmarks
inline constexpr int default_max_attempts = 5;         // what the outbox stores for a new event
inline const std::string user = "bench-user";
inline const std::string event_type = "steps.saved";

/// Accepts every event at once: the benchmarks time the outbox, not a network.
struct NullTransport {
  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    for (std::size_t i = 0; i < batch.size(); ++i) results[i] = outbox::delivery_result::delivered();
  }
};

inline std::string entity_name(std::size_t i) { return "entity-" + std::to_string(i % entity_count); }

/// 2 * entity_count producer events, entity i % entity_count: any window of up to
/// entity_count of them names distinct entities, consecutive windows continue the rotation.
inline std::vector<outbox::new_event> make_pool() {
  std::vector<outbox::new_event> pool(2 * entity_count);
  for (std::size_t i = 0; i < pool.size(); ++i) {
    pool[i].type = event_type;
    pool[i].entity_id = entity_name(i);
    pool[i].user_id = user;
    pool[i].payload = std::string(payload_bytes, 'x');
  }
  return pool;
}

/// Where the next window of `size` events starts in the pool.
inline std::size_t next_offset(std::size_t offset, std::size_t size) { return (offset + size) % entity_count; }

inline outbox::options drain_options() {
  outbox::options opts;
  opts.batch_size = drain_batch;
  return opts;
}

inline double seconds_between(std::chrono::steady_clock::time_point start, std::chrono::steady_clock::time_point stop) {
  return std::chrono::duration<double>(stop - start).count();
}

/// The concurrent savers: each of the run's threads enqueues one event per call into the one
/// shared `box`, each call durable before it returns; total throughput. `counts()` gives the
/// storage's (writes, syncs) so far; thread 0 reports writes per sync as `counter` (1.0: no
/// grouping happened).
template <class Box, class Counts>
void save_one_per_call(benchmark::State& state, Box& box, const char* counter, Counts counts) {
  const std::vector<outbox::new_event> pool = make_pool();
  std::size_t next = static_cast<std::size_t>(state.thread_index()) * 137;  // threads spread over keys
  std::pair<std::uint64_t, std::uint64_t> before{};
  if (state.thread_index() == 0) before = counts();
  for (auto _ : state) {
    auto id = box.enqueue(pool[next]);
    if (!id) {
      state.SkipWithError(id.error().what().c_str());
      break;
    }
    benchmark::DoNotOptimize(id);
    next = (next + 1) % entity_count;
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    const auto after = counts();
    if (const auto syncs = after.second - before.second; syncs > 0)
      state.counters[counter] = static_cast<double>(after.first - before.first) / static_cast<double>(syncs);
  }
}

}  // namespace outbox_bench
