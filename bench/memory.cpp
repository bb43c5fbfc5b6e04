/// \file
/// Google Benchmark bodies for `outbox::memory_storage` behind `outbox::Outbox`, each next to
/// the simplest structure doing the same job (`BM_baseline_*`), in the same binary: this machine
/// varies 10-25 % from run to run, so bench/README.md reports ratios, not absolute figures.
///
///     BM_memory_storage_enqueue/batch:N          Outbox::enqueue(span) of N events
///     BM_baseline_mutex_deque_push/batch:N       the same records pushed into a locked deque
///     BM_memory_storage_drain/events:N           process_once() until empty, batches of 100
///     BM_baseline_mutex_deque_drain/events:N     pop 100 at a time, one status update each
///     BM_memory_storage_claim_with_many_waiting  claim the one ready event among W waiting

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "outbox/outbox.hpp"
#include "common.hpp"

namespace {

using namespace outbox_bench;

using null_outbox = outbox::Outbox<outbox::memory_storage, NullTransport>;

/// What a durability-free outbox must keep per event, at the least: the baseline's element.
struct Record {
  std::uint64_t id = 0;
  std::string type;
  std::string entity_id;
  std::string user_id;
  std::string payload;
  int priority = 0;
  outbox::status status = outbox::status::pending;
  outbox::timestamp created_at{};
};

std::vector<Record> to_records(const std::vector<outbox::new_event>& pool) {
  std::vector<Record> records(pool.size());
  for (std::size_t i = 0; i < pool.size(); ++i) {
    records[i].type = pool[i].type;
    records[i].entity_id = pool[i].entity_id;
    records[i].user_id = pool[i].user_id;
    records[i].payload = pool[i].payload;
  }
  return records;
}

// ---- enqueue ---------------------------------------------------------------------------------

void BM_memory_storage_enqueue(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::vector<outbox::new_event> pool = make_pool();
  std::optional<null_outbox> box;
  box.emplace();
  std::size_t stored = 0;
  std::size_t offset = 0;
  for (auto _ : state) {
    if (stored >= rebuild_every) {
      // Keep the storage between 0 and 100k events (and memory bounded): a fresh outbox,
      // built and torn down off the clock.
      state.PauseTiming();
      box.reset();
      box.emplace();
      stored = 0;
      state.ResumeTiming();
    }
    auto ids = box->enqueue(std::span<const outbox::new_event>(pool.data() + offset, batch));
    if (!ids) {
      state.SkipWithError(ids.error().what().c_str());
      break;
    }
    benchmark::DoNotOptimize(ids);
    stored += batch;
    offset = next_offset(offset, batch);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

/// The same records pushed under one lock per batch, restarted at the same cadence.
void BM_baseline_mutex_deque_push(benchmark::State& state) {
  const auto batch = static_cast<std::size_t>(state.range(0));
  const std::vector<Record> pool = to_records(make_pool());
  std::mutex mutex;
  std::deque<Record> queue;
  std::uint64_t next_id = 1;
  std::size_t offset = 0;
  for (auto _ : state) {
    if (queue.size() >= rebuild_every) {
      state.PauseTiming();
      queue = {};
      state.ResumeTiming();
    }
    {
      std::lock_guard lock(mutex);
      const outbox::timestamp now = outbox::system_clock{}.now();
      for (std::size_t i = 0; i < batch; ++i) {
        Record& r = queue.emplace_back(pool[offset + i]);
        r.id = next_id++;
        r.created_at = now;
      }
    }
    benchmark::DoNotOptimize(queue.back());
    offset = next_offset(offset, batch);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// ---- drain -----------------------------------------------------------------------------------

/// Appends `total` events, entity_count distinct entities in rotation, in batches of 1000.
bool fill(null_outbox& box, const std::vector<outbox::new_event>& pool, std::size_t total) {
  for (std::size_t done = 0; done < total; done += entity_count) {
    const std::size_t n = std::min(entity_count, total - done);
    if (!box.enqueue(std::span<const outbox::new_event>(pool.data(), n))) return false;
  }
  return true;
}

void BM_memory_storage_drain(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  const std::vector<outbox::new_event> pool = make_pool();
  std::optional<null_outbox> box;
  for (auto _ : state) {
    state.PauseTiming();
    box.reset();  // the previous iteration's outbox goes away off the clock too
    box.emplace(outbox::memory_storage(), drain_options());
    box->set_user(user);
    if (!fill(*box, pool, total)) {
      state.SkipWithError("setup: enqueue failed");
      break;
    }
    state.ResumeTiming();

    std::size_t delivered = 0;
    for (;;) {
      const outbox::cycle_report report = box->process_once();
      if (report.claimed == 0) break;
      delivered += report.delivered;
    }
    if (delivered != total) {
      state.SkipWithError("the drain did not deliver every event");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

/// Pop 100 records at a time under the lock, "send" them, then record each one's new status
/// in an id -> status map under the lock: the least an outbox without durability must do.
void BM_baseline_mutex_deque_drain(benchmark::State& state) {
  const auto total = static_cast<std::size_t>(state.range(0));
  const std::vector<Record> pool = to_records(make_pool());
  std::mutex mutex;
  std::deque<Record> queue;
  std::unordered_map<std::uint64_t, outbox::status> statuses;
  std::vector<Record> batch;
  batch.reserve(drain_batch);
  for (auto _ : state) {
    state.PauseTiming();
    queue = {};
    statuses = {};
    const outbox::timestamp now = outbox::system_clock{}.now();
    for (std::size_t i = 0; i < total; ++i) {
      Record& r = queue.emplace_back(pool[i % entity_count]);
      r.id = i + 1;
      r.created_at = now;
      statuses.emplace(r.id, outbox::status::pending);
    }
    state.ResumeTiming();

    std::size_t delivered = 0;
    for (;;) {
      batch.clear();
      {
        std::lock_guard lock(mutex);
        while (batch.size() < drain_batch && !queue.empty()) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      if (batch.empty()) break;
      benchmark::DoNotOptimize(batch.data());  // the transport
      std::lock_guard lock(mutex);
      for (const Record& r : batch) statuses.find(r.id)->second = outbox::status::completed;
      delivered += batch.size();
    }
    if (delivered != total) {
      state.SkipWithError("the drain did not deliver every record");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// ---- claim among waiting events --------------------------------------------------------------

outbox::event stored_event(outbox::event_id id, std::string key, outbox::timestamp now) {
  outbox::event e;
  e.id = id;
  e.type = "steps.saved";
  e.entity_id = key;
  e.ordering_key = std::move(key);
  e.user_id = user;
  e.payload = std::string(payload_bytes, 'x');
  e.created_at = now;
  e.updated_at = now;
  return e;
}

/// `waiting` failed events, each the head of its own line and due in a year, and one ready
/// event. Times claim(limit 100) alone; between iterations the claimed event is released back to
/// pending off the clock. Near-flat across waiting:0 ... 100000 means claim never walks them.
void BM_memory_storage_claim_with_many_waiting(benchmark::State& state) {
  const auto waiting = static_cast<std::size_t>(state.range(0));
  const outbox::timestamp now = outbox::manual_clock().now();
  const outbox::timestamp lease_until = now + std::chrono::minutes(2);
  outbox::event_id_generator ids(42);
  outbox::memory_storage storage;

  if (waiting > 0) {
    std::vector<outbox::event> events;
    events.reserve(waiting);
    for (std::size_t i = 0; i < waiting; ++i) events.push_back(stored_event(ids.next(now), "waiting-" + std::to_string(i), now));
    storage.append(events).value();
    std::vector<outbox::event> claimed;
    if (storage.claim({user, now, lease_until, waiting}, claimed).value() != waiting) {
      state.SkipWithError("setup: not every event was claimed");
      return;
    }
    std::vector<outbox::outcome> failed(claimed.size());
    for (std::size_t i = 0; i < claimed.size(); ++i) {
      failed[i].id = claimed[i].id;
      failed[i].lease = claimed[i].lease;
      failed[i].to = outbox::status::failed;
      failed[i].attempts = claimed[i].attempts;
      failed[i].at = now;
      failed[i].retry_after = now + std::chrono::hours(24 * 365);
      failed[i].error = "backend unavailable";
    }
    if (storage.record(failed).value() != waiting) {
      state.SkipWithError("setup: not every event became failed");
      return;
    }
  }
  outbox::event ready = stored_event(ids.next(now), "ready", now);
  storage.append(std::span<outbox::event>(&ready, 1)).value();

  std::vector<outbox::event> out;
  out.reserve(drain_batch);
  outbox::outcome release;
  release.to = outbox::status::pending;
  release.at = now;
  for (auto _ : state) {
    out.clear();
    const auto start = std::chrono::steady_clock::now();
    auto claimed = storage.claim({user, now, lease_until, drain_batch}, out);
    const auto stop = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(claimed);
    if (!claimed || *claimed != 1) {
      state.SkipWithError("claim did not return exactly the one ready event");
      break;
    }
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    // Give it back unsent, as the outbox does when the session changes mid-batch.
    release.id = out.front().id;
    release.lease = out.front().lease;
    release.attempts = out.front().attempts - 1;
    benchmark::DoNotOptimize(storage.record(std::span<outbox::outcome>(&release, 1)));
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_memory_storage_enqueue)->ArgName("batch")->Arg(1)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(BM_baseline_mutex_deque_push)->ArgName("batch")->Arg(1)->Arg(10)->Arg(100)->Arg(1000);

// The untimed fill and teardown cost about as much as the timed drain; the default 0.5 s of
// timed work per row keeps the whole binary well under a minute.
BENCHMARK(BM_memory_storage_drain)->ArgName("events")->Arg(1000)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_baseline_mutex_deque_drain)->ArgName("events")->Arg(1000)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);

BENCHMARK(BM_memory_storage_claim_with_many_waiting)->ArgName("waiting")->Arg(0)->Arg(1000)->Arg(10000)->Arg(100000)->UseManualTime();

BENCHMARK_MAIN();
