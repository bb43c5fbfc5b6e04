// Must not compile: the transport names its member deliver() instead of send(), so
// outbox::Outbox rejects it with "outbox::Outbox: Transport must provide send(...)".

#include <outbox/outbox.hpp>

#include <span>

namespace {

struct transport_without_send {
  void deliver(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results);
};

}  // namespace

int main() {
  outbox::Outbox<outbox::memory_storage, transport_without_send, outbox::manual_clock> box;
  (void)box;
}
