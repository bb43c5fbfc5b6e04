// The policy concepts: every shipped policy models its concept, obvious non-models do not, and
// the storage concepts are layered narrow to broad so a policy that misses one member fails
// exactly the concept naming that member.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "outbox/outbox.hpp"

namespace {

using namespace std::chrono_literals;

// ---- shipped policies model their concepts ---------------------------------------------------

static_assert(outbox::storage<outbox::memory_storage>);
static_assert(outbox::transport<outbox::mock_transport>);
static_assert(outbox::clock<outbox::system_clock>);
static_assert(outbox::clock<outbox::manual_clock>);
static_assert(outbox::observable_clock<outbox::manual_clock>);
static_assert(!outbox::observable_clock<outbox::system_clock>);
static_assert(!outbox::observable_storage<outbox::memory_storage>);
static_assert(outbox::backoff<outbox::exponential_backoff>);
static_assert(outbox::backoff<outbox::fixed_backoff>);
static_assert(outbox::backoff<outbox::no_backoff>);
static_assert(outbox::bounded_backoff<outbox::exponential_backoff>);
static_assert(!outbox::bounded_backoff<outbox::fixed_backoff>);
static_assert(!outbox::bounded_backoff<outbox::no_backoff>);

// memory_storage models every layer, not only the conjunction.
static_assert(outbox::event_appender<outbox::memory_storage>);
static_assert(outbox::event_claimer<outbox::memory_storage>);
static_assert(outbox::outcome_recorder<outbox::memory_storage>);
static_assert(outbox::event_inspector<outbox::memory_storage>);
static_assert(outbox::event_maintainer<outbox::memory_storage>);

// ---- non-models ------------------------------------------------------------------------------

static_assert(!outbox::storage<int>);
static_assert(!outbox::event_appender<int>);
static_assert(!outbox::transport<int>);
static_assert(!outbox::clock<int>);
static_assert(!outbox::observable_clock<int>);
static_assert(!outbox::backoff<int>);

// Policies are not interchangeable: each shipped one models only its own concept.
static_assert(!outbox::storage<outbox::mock_transport>);
static_assert(!outbox::transport<outbox::memory_storage>);
static_assert(!outbox::clock<outbox::exponential_backoff>);
static_assert(!outbox::backoff<outbox::manual_clock>);

// ---- clock shapes ----------------------------------------------------------------------------

struct steady_time_clock {  // the wrong time type: stored times must be wall time
  [[nodiscard]] std::chrono::steady_clock::time_point now() const { return std::chrono::steady_clock::now(); }
};
struct mutable_now_clock {  // now() must be callable on a const clock
  [[nodiscard]] outbox::timestamp now() { return {}; }
};
struct listening_clock_without_now {  // on_change alone is not a clock
  void on_change(std::function<void()>) const {}
};
struct listening_clock {
  [[nodiscard]] outbox::timestamp now() const { return {}; }
  [[nodiscard]] int on_change(std::function<void()>) const { return 0; }
};
static_assert(!outbox::clock<steady_time_clock>);
static_assert(!outbox::clock<mutable_now_clock>);
static_assert(!outbox::clock<listening_clock_without_now>);
static_assert(!outbox::observable_clock<listening_clock_without_now>);
static_assert(outbox::clock<listening_clock>);
static_assert(outbox::observable_clock<listening_clock>);

// ---- backoff shapes --------------------------------------------------------------------------

struct int_delay_backoff {  // a bare number is not a duration
  [[nodiscard]] int delay(int) const { return 30; }
};
struct millisecond_backoff {  // any std::chrono duration that converts losslessly will do
  [[nodiscard]] std::chrono::milliseconds delay(int) const { return 5ms; }
};
struct capped_millisecond_backoff {
  [[nodiscard]] std::chrono::milliseconds delay(int) const { return 5ms; }
  [[nodiscard]] std::chrono::seconds max_delay() const { return 1s; }
};
struct cap_without_delay {
  [[nodiscard]] std::chrono::seconds max_delay() const { return 1s; }
};
static_assert(!outbox::backoff<int_delay_backoff>);
static_assert(outbox::backoff<millisecond_backoff>);
static_assert(!outbox::bounded_backoff<millisecond_backoff>);
static_assert(outbox::bounded_backoff<capped_millisecond_backoff>);
static_assert(!outbox::backoff<cap_without_delay>);
static_assert(!outbox::bounded_backoff<cap_without_delay>);

// ---- transport shapes ------------------------------------------------------------------------

struct transport_sending_one {  // one event at a time is not a batch transport
  void send(const outbox::event&, outbox::delivery_result&) {}
};
struct transport_returning_results {  // results go into the span, not a return value
  std::vector<outbox::delivery_result> send(std::span<const outbox::event>) { return {}; }
};
struct minimal_transport {
  void send(std::span<const outbox::event>, std::span<outbox::delivery_result>) {}
};
static_assert(!outbox::transport<transport_sending_one>);
static_assert(!outbox::transport<transport_returning_results>);
static_assert(outbox::transport<minimal_transport>);

// ---- storage layers, narrow to broad ---------------------------------------------------------
// Each struct adds one layer; declarations suffice for concepts.

struct append_only {
  outbox::result<void> append(std::span<outbox::event>);
};
struct append_claim : append_only {
  outbox::result<std::size_t> claim(const outbox::claim_request&, std::vector<outbox::event>&);
};
struct append_claim_record : append_claim {
  outbox::result<std::size_t> record(std::span<outbox::outcome>);
};
struct append_claim_record_inspect : append_claim_record {
  outbox::result<std::optional<outbox::event>> find(outbox::event_id);
  outbox::result<std::vector<outbox::event>> query(const outbox::event_query&);
  outbox::result<outbox::event_stats> stats(std::optional<std::string_view>, outbox::timestamp);
  outbox::result<std::optional<outbox::timestamp>> next_wake(std::string_view, outbox::timestamp);
};
struct complete_storage : append_claim_record_inspect {
  outbox::result<std::size_t> reset(std::span<const outbox::event_id>, outbox::timestamp);
  outbox::result<std::size_t> reset_dead(std::optional<std::string_view>, outbox::timestamp);
  outbox::result<std::size_t> purge_completed(outbox::timestamp);
  outbox::result<std::size_t> clamp_schedule(outbox::timestamp, outbox::timestamp);
};

static_assert(outbox::event_appender<append_only>);
static_assert(!outbox::event_claimer<append_only>);
static_assert(!outbox::storage<append_only>);

static_assert(outbox::event_appender<append_claim>);
static_assert(outbox::event_claimer<append_claim>);
static_assert(!outbox::outcome_recorder<append_claim>);
static_assert(!outbox::storage<append_claim>);

static_assert(outbox::outcome_recorder<append_claim_record>);
static_assert(!outbox::event_inspector<append_claim_record>);
static_assert(!outbox::storage<append_claim_record>);

static_assert(outbox::event_inspector<append_claim_record_inspect>);
static_assert(!outbox::event_maintainer<append_claim_record_inspect>);
static_assert(!outbox::storage<append_claim_record_inspect>);

static_assert(outbox::event_maintainer<complete_storage>);
static_assert(outbox::storage<complete_storage>);

// A storage that has everything but claim fails only the claimer layer.
struct all_but_claim : append_only {
  outbox::result<std::size_t> record(std::span<outbox::outcome>);
  outbox::result<std::optional<outbox::event>> find(outbox::event_id);
  outbox::result<std::vector<outbox::event>> query(const outbox::event_query&);
  outbox::result<outbox::event_stats> stats(std::optional<std::string_view>, outbox::timestamp);
  outbox::result<std::optional<outbox::timestamp>> next_wake(std::string_view, outbox::timestamp);
  outbox::result<std::size_t> reset(std::span<const outbox::event_id>, outbox::timestamp);
  outbox::result<std::size_t> reset_dead(std::optional<std::string_view>, outbox::timestamp);
  outbox::result<std::size_t> purge_completed(outbox::timestamp);
  outbox::result<std::size_t> clamp_schedule(outbox::timestamp, outbox::timestamp);
};
static_assert(outbox::event_appender<all_but_claim>);
static_assert(!outbox::event_claimer<all_but_claim>);
static_assert(outbox::outcome_recorder<all_but_claim>);
static_assert(outbox::event_inspector<all_but_claim>);
static_assert(outbox::event_maintainer<all_but_claim>);
static_assert(!outbox::storage<all_but_claim>);

// Return types are part of the contract: a storage that reports failure as bool is not one.
struct append_returning_bool {
  bool append(std::span<outbox::event>);
};
struct claim_returning_void : append_only {
  void claim(const outbox::claim_request&, std::vector<outbox::event>&);
};
static_assert(!outbox::event_appender<append_returning_bool>);
static_assert(!outbox::event_claimer<claim_returning_void>);

// ---- the shipped compositions ----------------------------------------------------------------

static_assert(std::is_default_constructible_v<outbox::test_outbox>);
static_assert(std::is_default_constructible_v<outbox::memory_outbox<outbox::mock_transport>>);
static_assert(std::is_same_v<outbox::memory_outbox<outbox::mock_transport>::clock_type, outbox::system_clock>);
static_assert(
    std::is_same_v<outbox::memory_outbox<outbox::mock_transport>::backoff_type, outbox::exponential_backoff>);
static_assert(std::is_same_v<outbox::test_outbox::clock_type, outbox::manual_clock>);

}  // namespace

TEST_CASE("every shipped policy is usable through the member its concept requires", "[concepts]") {
  // Storage: append through the event_appender member.
  outbox::memory_storage storage;
  outbox::event_id_generator ids(1);
  outbox::event stored;
  stored.id = ids.next(outbox::manual_clock().now());
  stored.type = "steps.saved";
  stored.user_id = "alice";
  stored.ordering_key = "steps-1";
  const outbox::result<void> appended = storage.append(std::span<outbox::event>(&stored, 1));
  CHECK(appended.has_value());
  CHECK(stored.seq == 1);

  // Transport: send writes one result per event.
  outbox::mock_transport transport;
  std::vector<outbox::delivery_result> results(1, outbox::delivery_result::retryable("no result"));
  transport.send(std::span<const outbox::event>(&stored, 1), std::span<outbox::delivery_result>(results));
  CHECK(results[0].outcome == outbox::delivery_result::kind::delivered);

  // Clocks: now.
  const outbox::manual_clock manual;
  CHECK(manual.now() == outbox::timestamp(std::chrono::seconds(1767225600)));
  const outbox::system_clock system;
  CHECK(system.now() > outbox::timestamp(std::chrono::seconds(1577836800)));  // after 2020-01-01

  // Backoffs: delay.
  outbox::exponential_backoff exponential;
  CHECK(exponential.delay(1) == 30s);
  const outbox::fixed_backoff fixed(7s);
  CHECK(fixed.delay(3) == 7s);
  const outbox::no_backoff none;
  CHECK(none.delay(3) == outbox::duration::zero());
}

#if OUTBOX_TEST_SINGLE_HEADER
// Proves this build really uses the generated header, not include/.
#ifndef OUTBOX_SINGLE_HEADER
#error "the single-header build of the core tests did not pick up single_include/outbox/outbox.hpp"
#endif
#endif
