# ctest driver for the demo's own tests:
#   cmake -DDEMO=<outbox_demo> -DMODE=<mode> [-DARGS="<flags>"] [-DEXPECT=<regex>] -P demo_test.cmake
# Modes:
#   reproducible  two runs with ARGS print the same report and day lines (only the lines with
#                 wall-clock figures, ports and pids may differ), and both pass their own audit;
#   real_kill     a run with ARGS and no failures injected passes its audit with nothing missing
#                 at the backend, its app process ended by SIGKILL, and every event in flight at
#                 the kill reached the backend twice (the duplicates it counts);
#   app_fails     a run with ARGS whose app cannot start exits 1 and says why on stderr;
#   bad_flag      a run with ARGS exits 2, prints nothing on stdout, and its stderr matches EXPECT;
#   help          --help exits 0 and its stdout matches every regex in EXPECT (a ;-list).
# Every mode that starts the backend checks that its process is gone afterwards.
separate_arguments(args UNIX_COMMAND "${ARGS}")

function(run_demo prefix)
  execute_process(COMMAND "${DEMO}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${prefix}_rc "${rc}" PARENT_SCOPE)
  set(${prefix}_out "${out}" PARENT_SCOPE)
  set(${prefix}_err "${err}" PARENT_SCOPE)
  # The backend the run started must be stopped by the time the demo returns.
  if(out MATCHES "backend on [^ ]+ \\(outbox_demo_server, pid ([0-9]+)\\)")
    if(EXISTS "/proc/${CMAKE_MATCH_1}")
      message(FATAL_ERROR "`outbox_demo ${ARGN}` left its backend (pid ${CMAKE_MATCH_1}) running:\n${out}\n${err}")
    endif()
  elseif(NOT rc EQUAL 2 AND NOT "${ARGN}" STREQUAL "--help")
    message(FATAL_ERROR "`outbox_demo ${ARGN}` did not say which backend it started:\n${out}\n${err}")
  endif()
endfunction()

if(MODE STREQUAL "reproducible")
  foreach(run first second)
    run_demo(${run} ${args})
    if(NOT ${run}_rc EQUAL 0)
      message(FATAL_ERROR "the ${run} run failed (${${run}_rc}):\n${${run}_out}\n${${run}_err}")
    endif()
    string(REGEX REPLACE "(^|\n)(throughput|backend on) [^\n]*" "" ${run}_counts "${${run}_out}")
  endforeach()
  if(NOT first_counts STREQUAL second_counts)
    message(FATAL_ERROR "two runs of `outbox_demo ${ARGS}` differ:\n--- first\n${first_out}\n--- second\n${second_out}")
  endif()
  foreach(expected "day 1: [0-9]+ events: " "\nduplicates +[0-9]+ " "\nkill +the app process ended by SIGKILL")
    if(NOT first_counts MATCHES "${expected}")
      message(FATAL_ERROR "no line matching '${expected}' in the output:\n${first_out}")
    endif()
  endforeach()
elseif(MODE STREQUAL "real_kill")
  run_demo(run ${args})
  if(NOT run_rc EQUAL 0)
    message(FATAL_ERROR "`outbox_demo ${ARGS}` failed (${run_rc}):\n${run_out}\n${run_err}")
  endif()
  foreach(expected "\nmissing +0 " "\nkill +the app process ended by SIGKILL mid-batch" "kill! the app \\(signal Killed\\)")
    if(NOT run_out MATCHES "${expected}")
      message(FATAL_ERROR "no line matching '${expected}' in the output:\n${run_out}")
    endif()
  endforeach()
  if(NOT run_out MATCHES "\nduplicates +([0-9]+) [^\n]*; ([0-9]+) events were in flight at the kill"
     OR CMAKE_MATCH_1 EQUAL 0 OR NOT CMAKE_MATCH_1 EQUAL CMAKE_MATCH_2)
    message(FATAL_ERROR "the events in flight at the kill did not all reach the backend twice:\n${run_out}")
  endif()
elseif(MODE STREQUAL "app_fails")
  run_demo(run ${args})
  if(NOT run_rc EQUAL 1 OR NOT run_err MATCHES "the app failed")
    message(FATAL_ERROR "`outbox_demo ${ARGS}`: expected exit 1 and 'the app failed' on stderr; got exit ${run_rc}\n"
                        "stdout: ${run_out}\nstderr: ${run_err}")
  endif()
elseif(MODE STREQUAL "bad_flag")
  run_demo(bad ${args})
  if(NOT bad_rc EQUAL 2 OR NOT bad_out STREQUAL "" OR NOT bad_err MATCHES "${EXPECT}")
    message(FATAL_ERROR "`outbox_demo ${ARGS}`: expected exit 2, nothing on stdout and stderr matching "
                        "'${EXPECT}'; got exit ${bad_rc}\nstdout: ${bad_out}\nstderr: ${bad_err}")
  endif()
elseif(MODE STREQUAL "help")
  run_demo(help --help)
  if(NOT help_rc EQUAL 0)
    message(FATAL_ERROR "--help exited ${help_rc}:\n${help_out}\n${help_err}")
  endif()
  foreach(expected IN LISTS EXPECT)
    if(NOT help_out MATCHES "${expected}")
      message(FATAL_ERROR "--help does not match '${expected}':\n${help_out}")
    endif()
  endforeach()
else()
  message(FATAL_ERROR "unknown MODE ${MODE}")
endif()
