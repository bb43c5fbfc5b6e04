// Must not compile: the storage has every member of outbox::memory_storage except claim(), so
// outbox::Outbox rejects it with "outbox::Outbox: Storage must provide claim(...)" and with no
// other storage requirement.

#include <outbox/outbox.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace {

struct storage_without_claim {
  outbox::result<void> append(std::span<outbox::event> events);
  // claim(const outbox::claim_request&, std::vector<outbox::event>&) is missing.
  outbox::result<std::size_t> record(std::span<outbox::outcome> outcomes);
  outbox::result<std::optional<outbox::event>> find(outbox::event_id id);
  outbox::result<std::vector<outbox::event>> query(const outbox::event_query& q);
  outbox::result<outbox::event_stats> stats(std::optional<std::string_view> user, outbox::timestamp now);
  outbox::result<std::optional<outbox::timestamp>> next_wake(std::string_view user, outbox::timestamp now);
  outbox::result<std::size_t> reset(std::span<const outbox::event_id> ids, outbox::timestamp now);
  outbox::result<std::size_t> reset_dead(std::optional<std::string_view> user, outbox::timestamp now);
  outbox::result<std::size_t> purge_completed(outbox::timestamp before);
  outbox::result<std::size_t> clamp_schedule(outbox::timestamp retry_limit, outbox::timestamp lease_limit);
};

}  // namespace

int main() {
  outbox::Outbox<storage_without_claim, outbox::mock_transport, outbox::manual_clock> box;
  (void)box;
}
