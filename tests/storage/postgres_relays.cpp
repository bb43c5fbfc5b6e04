// Many relays (Outbox instances, each with its own connection) on one PostgreSQL database.
#include <outbox/storage/postgres.hpp>

#include "support/postgres.hpp"
