// README wrapper: the block is the body of a function that configures a NATS transport.
#include <outbox/transport/nats.hpp>

void readme_snippet() {
  // {snippet}
}
