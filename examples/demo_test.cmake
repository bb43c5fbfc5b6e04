# ctest driver for the demo's own tests:
#   cmake -DDEMO=<outbox_demo> -DMODE=<mode> [-DARGS="<flags>"] [-DEXPECT=<regex>] -P demo_test.cmake
# Modes:
#   reproducible  two runs with ARGS print the same report and day lines (only the wall-clock
#                 throughput line may differ), and both pass their own audit;
#   bad_flag      a run with ARGS exits 2, prints nothing on stdout, and its stderr matches EXPECT;
#   help          --help exits 0 and its stdout matches every regex in EXPECT (a ;-list).
separate_arguments(args UNIX_COMMAND "${ARGS}")

function(run_demo prefix)
  execute_process(COMMAND "${DEMO}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${prefix}_rc "${rc}" PARENT_SCOPE)
  set(${prefix}_out "${out}" PARENT_SCOPE)
  set(${prefix}_err "${err}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "reproducible")
  foreach(run first second)
    run_demo(${run} ${args})
    if(NOT ${run}_rc EQUAL 0)
      message(FATAL_ERROR "the ${run} run failed (${${run}_rc}):\n${${run}_out}\n${${run}_err}")
    endif()
    string(REGEX REPLACE "\nthroughput [^\n]*" "" ${run}_counts "${${run}_out}")
  endforeach()
  if(NOT first_counts STREQUAL second_counts)
    message(FATAL_ERROR "two runs of `outbox_demo ${ARGS}` differ:\n--- first\n${first_out}\n--- second\n${second_out}")
  endif()
  if(NOT first_counts MATCHES "day 1: [0-9]+ events: ")
    message(FATAL_ERROR "no day line in the output:\n${first_out}")
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
