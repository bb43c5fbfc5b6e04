# Runs outbox_postgres_service against the test run's PostgreSQL: the conninfo is in FILE (see
# tests/support/pg_fixture.cmake); without it (no PostgreSQL) the run is skipped.
#   cmake -DEXAMPLE=<binary> -DFILE=<conninfo file> -P postgres_service_test.cmake
if(NOT EXISTS "${FILE}")
  message(STATUS "no PostgreSQL server for this run: outbox_postgres_service not run")
  return()
endif()
file(STRINGS "${FILE}" conninfo LIMIT_COUNT 1)
execute_process(COMMAND "${EXAMPLE}" "${conninfo}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "outbox_postgres_service exited with ${rc}")
endif()
if(NOT out MATCHES "10 of 10 events delivered")
  message(FATAL_ERROR "outbox_postgres_service did not deliver every event")
endif()
