// A storage policy of your own. This one wraps any storage and counts the writes that reach it
// (say, to export metrics); it shows every member the outbox needs, with the concept that asks
// for it. Check yours the same way: the static_asserts name the first requirement it misses,
// and the conformance suite (outbox/testing/storage_conformance.hpp) tests the behaviour.
#include <outbox/outbox.hpp>

#include <cstdint>
#include <iostream>

namespace {

template <class Inner>
class counting_storage {
 public:
  explicit counting_storage(Inner inner = Inner()) : inner_(std::move(inner)) {}

  // outbox::event_appender: store all of them or none; assign seq. You may move from the events.
  outbox::result<void> append(std::span<outbox::event> events) {
    ++writes_;
    return inner_.append(events);
  }
  // outbox::event_claimer: ready heads of the user's ordering keys, priority then seq, as leases.
  outbox::result<std::size_t> claim(const outbox::claim_request& r, std::vector<outbox::event>& out) {
    ++writes_;
    return inner_.claim(r, out);
  }
  // outbox::outcome_recorder: apply only while the lease matches.
  outbox::result<std::size_t> record(std::span<outbox::outcome> outcomes) {
    ++writes_;
    return inner_.record(outcomes);
  }
  // outbox::event_inspector
  outbox::result<std::optional<outbox::event>> find(outbox::event_id id) { return inner_.find(id); }
  outbox::result<std::vector<outbox::event>> query(const outbox::event_query& q) { return inner_.query(q); }
  outbox::result<outbox::event_stats> stats(std::optional<std::string_view> user, outbox::timestamp now) {
    return inner_.stats(user, now);
  }
  outbox::result<std::optional<outbox::timestamp>> next_wake(std::string_view user, outbox::timestamp now) {
    return inner_.next_wake(user, now);
  }
  // outbox::event_maintainer
  outbox::result<std::size_t> reset(std::span<const outbox::event_id> ids, outbox::timestamp now) {
    ++writes_;
    return inner_.reset(ids, now);
  }
  outbox::result<std::size_t> reset_dead(std::optional<std::string_view> user, outbox::timestamp now) {
    ++writes_;
    return inner_.reset_dead(user, now);
  }
  outbox::result<std::size_t> purge_completed(outbox::timestamp before) {
    ++writes_;
    return inner_.purge_completed(before);
  }
  outbox::result<std::size_t> clamp_schedule(outbox::timestamp retry_limit, outbox::timestamp lease_limit) {
    ++writes_;
    return inner_.clamp_schedule(retry_limit, lease_limit);
  }

  [[nodiscard]] std::uint64_t writes() const { return writes_; }

 private:
  Inner inner_;
  std::uint64_t writes_ = 0;
};

static_assert(outbox::storage<counting_storage<outbox::memory_storage>>);

}  // namespace

int main() {
  outbox::mock_transport backend;
  outbox::Outbox<counting_storage<outbox::memory_storage>, outbox::mock_transport> box(
      counting_storage<outbox::memory_storage>(), backend);
  box.set_user("alice");
  for (int i = 0; i < 3; ++i) {
    if (!box.enqueue({.type = "note.saved", .entity_id = "n" + std::to_string(i), .payload = "{}"})) return 1;
  }
  while (box.process_once().claimed > 0) {
  }
  std::cout << backend.accepted_count() << " delivered with " << box.storage().writes() << " storage writes\n";
  return backend.accepted_count() == 3 ? 0 : 1;
}
