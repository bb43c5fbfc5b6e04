# ctest driver for the consumer builds: cmake -DMODE=... -DSOURCE=... -DWORK=... -DCXX=... -P run.cmake
# MODE: subdirectory, package (find_package), pkgconfig (no CMake: pkg-config) or single_header.
# EXPECT: the adapters the CMake ways in must provide, comma-separated (sqlite,http,nats).
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

# Configures outbox alone and installs it into ${WORK}/prefix.
function(install_outbox)
  run(${CMAKE_COMMAND} -S "${SOURCE}" -B "${WORK}/outbox" ${common} -DOUTBOX_BUILD_TESTS=OFF
      -DOUTBOX_BUILD_EXAMPLES=OFF -DOUTBOX_BUILD_BENCHMARKS=OFF -DOUTBOX_INSTALL=ON -DCMAKE_INSTALL_LIBDIR=lib)
  run(${CMAKE_COMMAND} --install "${WORK}/outbox" --prefix "${WORK}/prefix")
endfunction()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(consumer "${SOURCE}/tests/consumer")
set(common -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release)

if(MODE STREQUAL "subdirectory")
  run(${CMAKE_COMMAND} -S "${consumer}" -B "${WORK}/build" ${common} -DOUTBOX_CONSUME=subdirectory
      -DOUTBOX_SOURCE_DIR=${SOURCE} "-DOUTBOX_EXPECT=${EXPECT}")
  run(${CMAKE_COMMAND} --build "${WORK}/build")
  run("${WORK}/build/consumer")
elseif(MODE STREQUAL "package")
  install_outbox()
  run(${CMAKE_COMMAND} -S "${consumer}" -B "${WORK}/build" ${common} -DOUTBOX_CONSUME=package
      -DCMAKE_PREFIX_PATH=${WORK}/prefix "-DOUTBOX_EXPECT=${EXPECT}")
  run(${CMAKE_COMMAND} --build "${WORK}/build")
  run("${WORK}/build/consumer")
elseif(MODE STREQUAL "pkgconfig")
  # Without CMake: the compiler, the install prefix and `pkg-config --cflags --libs`. The prefix's
  # pkgconfig folder comes first, so the installed outbox.pc is found whatever the system holds.
  install_outbox()
  find_program(PKG_CONFIG pkg-config REQUIRED)
  set(ENV{PKG_CONFIG_PATH} "${WORK}/prefix/lib/pkgconfig:$ENV{PKG_CONFIG_PATH}")
  execute_process(COMMAND "${PKG_CONFIG}" --cflags --libs outbox-sqlite RESULT_VARIABLE rc OUTPUT_VARIABLE flags
                  ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config --cflags --libs outbox-sqlite failed (${rc}): ${err}")
  endif()
  string(FIND "${flags}" "-I${WORK}/prefix/" into_prefix)
  if(into_prefix EQUAL -1)
    message(FATAL_ERROR "pkg-config does not point into the install prefix: ${flags}")
  endif()
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CXX} -std=c++20 -Wall -Wextra -Werror -DCONSUMER_WITH_SQLITE "${consumer}/main.cpp" -o "${WORK}/consumer"
      ${flags})
  run("${WORK}/consumer")
elseif(MODE STREQUAL "single_header")
  # Nothing but a compiler and the one generated header.
  run(${CXX} -std=c++20 -Wall -Wextra -Werror -I "${SOURCE}/single_include" "${consumer}/main.cpp"
      -o "${WORK}/consumer" -pthread)
  run("${WORK}/consumer")
else()
  message(FATAL_ERROR "unknown MODE ${MODE}")
endif()
message(STATUS "consumer build (${MODE}) ran")
