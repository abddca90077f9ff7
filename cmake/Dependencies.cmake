# Third-party dependencies. Both are PRIVATE to the library: nothing of them
# appears in the public headers.

set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
find_package(OpenMP COMPONENTS CXX)

# nlohmann/json: a system/CMake package if there is one, else the headers the
# `nlohmann_json` PyPI package ships (a build requirement of the wheel).
find_package(nlohmann_json 3.10 CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  if(NOT FASTENSORS_JSON_INCLUDE_DIR)
    find_package(Python COMPONENTS Interpreter QUIET)
    if(Python_Interpreter_FOUND)
      execute_process(
        COMMAND "${Python_EXECUTABLE}" -c
                "import nlohmann_json, pathlib; print(pathlib.Path(nlohmann_json.__file__).parent / 'include')"
        OUTPUT_VARIABLE _fst_json_dir OUTPUT_STRIP_TRAILING_WHITESPACE
        RESULT_VARIABLE _fst_json_rc ERROR_QUIET)
      if(_fst_json_rc EQUAL 0 AND EXISTS "${_fst_json_dir}/nlohmann/json.hpp")
        set(FASTENSORS_JSON_INCLUDE_DIR "${_fst_json_dir}")
      endif()
    endif()
  endif()
  if(NOT FASTENSORS_JSON_INCLUDE_DIR)
    message(FATAL_ERROR
      "nlohmann/json not found: `pip install nlohmann_json`, install a nlohmann_json "
      "CMake package, or set FASTENSORS_JSON_INCLUDE_DIR")
  endif()
  add_library(fastensors_json INTERFACE)
  target_include_directories(fastensors_json SYSTEM INTERFACE
                             "$<BUILD_INTERFACE:${FASTENSORS_JSON_INCLUDE_DIR}>")
  add_library(nlohmann_json::nlohmann_json ALIAS fastensors_json)
  set(FASTENSORS_JSON_BUNDLED_HEADERS ON)
endif()
