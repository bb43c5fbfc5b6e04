// README wrapper: the block is a test file of its own, run against `my_storage` (here the memory
// storage, which has both halves).
#include <outbox/outbox.hpp>

using my_storage = outbox::memory_storage;

// {snippet}
