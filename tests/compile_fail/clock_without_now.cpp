// Must not compile: the clock names its member time() instead of now(), so outbox::Outbox
// rejects it with "outbox::Outbox: Clock must provide now() const -> outbox::timestamp".

#include <outbox/outbox.hpp>

namespace {

struct clock_without_now {
  [[nodiscard]] outbox::timestamp time() const;
};

}  // namespace

int main() {
  outbox::Outbox<outbox::memory_storage, outbox::mock_transport, clock_without_now> box;
  (void)box;
}
