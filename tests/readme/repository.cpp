// README wrapper: the block is a file of its own that uses `box`, an outbox over SQLite (in a
// namespace of its own, so the name `box` is not global).
#include <outbox/outbox.hpp>
#include <outbox/storage/sqlite.hpp>

#include <string>
#include <string_view>

namespace readme {

extern outbox::Outbox<outbox::sqlite_storage, outbox::mock_transport> box;

// {snippet}

}  // namespace readme
