// README wrapper: the block is the body of a function given `box`, an outbox over memory storage,
// that returns an int (an exit code).
#include <outbox/outbox.hpp>

#include <iostream>
#include <string>

int readme_snippet(outbox::memory_outbox<outbox::mock_transport>& box) {
  // {snippet}
  return 0;
}
