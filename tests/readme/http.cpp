// README wrapper: the block is the body of a function that sets up an outbox over HTTP.
#include <outbox/outbox.hpp>
#include <outbox/transport/http.hpp>

#include <string>
#include <utility>

void readme_snippet() {
  // {snippet}
}
