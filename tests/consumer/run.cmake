# ctest driver for the consumer builds: cmake -DMODE=... -DSOURCE=... -DWORK=... -DCXX=... -P run.cmake
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(consumer "${SOURCE}/tests/consumer")
set(common -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release)

if(MODE STREQUAL "subdirectory")
  run(${CMAKE_COMMAND} -S "${consumer}" -B "${WORK}/build" ${common} -DOUTBOX_CONSUME=subdirectory
      -DOUTBOX_SOURCE_DIR=${SOURCE})
  run(${CMAKE_COMMAND} --build "${WORK}/build")
  run("${WORK}/build/consumer")
elseif(MODE STREQUAL "package")
  run(${CMAKE_COMMAND} -S "${SOURCE}" -B "${WORK}/outbox" ${common} -DOUTBOX_BUILD_TESTS=OFF
      -DOUTBOX_BUILD_EXAMPLES=OFF -DOUTBOX_BUILD_BENCHMARKS=OFF -DOUTBOX_INSTALL=ON)
  run(${CMAKE_COMMAND} --install "${WORK}/outbox" --prefix "${WORK}/prefix")
  run(${CMAKE_COMMAND} -S "${consumer}" -B "${WORK}/build" ${common} -DOUTBOX_CONSUME=package
      -DCMAKE_PREFIX_PATH=${WORK}/prefix)
  run(${CMAKE_COMMAND} --build "${WORK}/build")
  run("${WORK}/build/consumer")
elseif(MODE STREQUAL "single_header")
  # Nothing but a compiler and the one generated header.
  run(${CXX} -std=c++20 -Wall -Wextra -Werror -I "${SOURCE}/single_include" "${consumer}/main.cpp"
      -o "${WORK}/consumer" -pthread)
  run("${WORK}/consumer")
else()
  message(FATAL_ERROR "unknown MODE ${MODE}")
endif()
message(STATUS "consumer build (${MODE}) ran")
