# The CTest fixture around the PostgreSQL tests: ACTION=start runs scripts/pg_server start DIR and
# writes the conninfo it prints to FILE, which the test binary reads (OUTBOX_PG_CONNINFO_FILE);
# ACTION=stop stops that server and removes both. When PostgreSQL is missing and cannot be
# installed (pg_server exits 77) it says so in one line and writes no FILE: the test binary then
# skips only its PostgreSQL tests.
#   cmake -DACTION=start|stop -DSCRIPT=<scripts/pg_server> -DDIR=<dir> -DFILE=<file> -P pg_fixture.cmake
foreach(var ACTION SCRIPT DIR FILE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "pg_fixture.cmake: ${var} is not set")
  endif()
endforeach()

if(ACTION STREQUAL "start")
  file(REMOVE "${FILE}")
  # A server left by an interrupted run is stopped first.
  execute_process(COMMAND "${SCRIPT}" stop "${DIR}" RESULT_VARIABLE ignored)
  execute_process(COMMAND "${SCRIPT}" start "${DIR}" RESULT_VARIABLE rc OUTPUT_VARIABLE conninfo
                  ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 77)
    message(STATUS "${err}")
  elseif(NOT rc EQUAL 0)
    message(FATAL_ERROR "pg_server start failed (${rc}): ${err}")
  else()
    file(WRITE "${FILE}" "${conninfo}\n")
    message(STATUS "PostgreSQL: ${conninfo}")
  endif()
elseif(ACTION STREQUAL "stop")
  file(REMOVE "${FILE}")
  execute_process(COMMAND "${SCRIPT}" stop "${DIR}" RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pg_server stop failed (${rc}): ${err}")
  endif()
else()
  message(FATAL_ERROR "pg_fixture.cmake: ACTION must be start or stop, not '${ACTION}'")
endif()
