# Per-ISA conversion kernels (docs/dtypes.md). The library is compiled for the
# baseline; only these files get wider instruction sets, through per-file
# flags, and the dispatcher picks one at run time. A compiler without a flag
# simply leaves that level out.
include(CheckCXXCompilerFlag)

set(_fst_x86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
  set(_fst_x86 ON)
endif()

if(_fst_x86 AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(_fst_avx2_flags -mavx2 -mfma -mf16c)
  set(_fst_avx512_flags ${_fst_avx2_flags} -mavx512f -mavx512bw -mavx512dq -mavx512vl)
  set(_fst_avx512bf16_flags ${_fst_avx512_flags} -mavx512bf16)
  # GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own
  # _mm512_undefined_* idiom (GCC bug 105593); silence it for these files only.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(_fst_avx512_quiet -Wno-maybe-uninitialized)
  endif()

  # One check per level, on the whole flag list.
  foreach(level avx2 avx512 avx512bf16)
    string(REPLACE ";" " " _flags "${_fst_${level}_flags}")
    set(CMAKE_REQUIRED_FLAGS "${_flags}")
    check_cxx_compiler_flag("" FASTENSORS_CXX_HAS_${level})
    unset(CMAKE_REQUIRED_FLAGS)
  endforeach()

  if(FASTENSORS_CXX_HAS_avx2)
    target_sources(fastensors PRIVATE src/convert/x86/avx2.cpp)
    set_source_files_properties(src/convert/x86/avx2.cpp PROPERTIES COMPILE_OPTIONS "${_fst_avx2_flags}")
    target_compile_definitions(fastensors PRIVATE FASTENSORS_HAVE_AVX2_KERNELS=1)
  endif()
  if(FASTENSORS_CXX_HAS_avx512)
    target_sources(fastensors PRIVATE src/convert/x86/avx512.cpp)
    set_source_files_properties(src/convert/x86/avx512.cpp PROPERTIES COMPILE_OPTIONS "${_fst_avx512_flags};${_fst_avx512_quiet}")
    target_compile_definitions(fastensors PRIVATE FASTENSORS_HAVE_AVX512_KERNELS=1)
  endif()
  if(FASTENSORS_CXX_HAS_avx512bf16)
    target_sources(fastensors PRIVATE src/convert/x86/avx512bf16.cpp)
    set_source_files_properties(src/convert/x86/avx512bf16.cpp PROPERTIES COMPILE_OPTIONS "${_fst_avx512bf16_flags};${_fst_avx512_quiet}")
    target_compile_definitions(fastensors PRIVATE FASTENSORS_HAVE_AVX512BF16_KERNELS=1)
  endif()
endif()
