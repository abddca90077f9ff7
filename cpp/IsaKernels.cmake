# Per-ISA kernels of the conversions (docs/dtypes.md) and the quantization
# schemes (docs/quantization.md). The library is compiled for the baseline;
# only the files under src/convert/x86 and src/quant/x86 get wider instruction
# sets, through per-file flags, and src/cpu/isa.cpp picks a level at run time
# (fastensors/isa.hpp). A level is built whole (its conversion and its
# quantization kernels) or, when the compiler lacks one of its flags, left out.
include(CheckCXXCompilerFlag)

set(_fst_x86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
  set(_fst_x86 ON)
endif()

if(_fst_x86 AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # The flags of each level: exactly what isa_supported() checks at run time.
  set(_fst_avx2_flags -mavx2 -mfma -mf16c)
  set(_fst_avx512_flags ${_fst_avx2_flags} -mavx512f -mavx512bw -mavx512dq -mavx512vl)
  set(_fst_avx512bf16_flags ${_fst_avx512_flags} -mavx512bf16)
  # GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own
  # _mm512_undefined_* idiom (GCC bug 105593); silence it for these files only.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(_fst_avx512_quiet -Wno-maybe-uninitialized)
    set(_fst_avx512bf16_quiet -Wno-maybe-uninitialized)
  endif()

  # The files of each level. Quantization kernels reproduce the scalar
  # arithmetic operation by operation, so they never contract into FMA.
  set(_fst_avx2_convert src/convert/x86/avx2.cpp)
  set(_fst_avx2_quant src/quant/x86/ggml_avx2.cpp src/quant/x86/int_avx2.cpp src/quant/x86/nf4_avx2.cpp
                     src/quant/x86/kquant_avx2.cpp)
  set(_fst_avx512_convert src/convert/x86/avx512.cpp)
  set(_fst_avx512_quant src/quant/x86/ggml_avx512.cpp src/quant/x86/int_avx512.cpp src/quant/x86/nf4_avx512.cpp
                       src/quant/x86/kquant_avx512.cpp)
  # AVX512-BF16 only adds conversions; quantization at that level runs the
  # AVX-512 kernels (src/quant/quant_dispatch.cpp).
  set(_fst_avx512bf16_convert src/convert/x86/avx512bf16.cpp)
  set(_fst_avx512bf16_quant "")

  set(_fst_previous ON)
  foreach(level avx2 avx512 avx512bf16)
    # One check per level, on the whole flag list; a level needs the one below.
    string(REPLACE ";" " " _flags "${_fst_${level}_flags}")
    set(CMAKE_REQUIRED_FLAGS "${_flags}")
    check_cxx_compiler_flag("" FASTENSORS_CXX_HAS_${level})
    unset(CMAKE_REQUIRED_FLAGS)
    if(NOT FASTENSORS_CXX_HAS_${level} OR NOT _fst_previous)
      set(_fst_previous OFF)
      continue()
    endif()

    string(TOUPPER "${level}" _upper)
    set(_opts ${_fst_${level}_flags} ${_fst_${level}_quiet})
    target_sources(fastensors PRIVATE ${_fst_${level}_convert} ${_fst_${level}_quant})
    set_source_files_properties(${_fst_${level}_convert} PROPERTIES COMPILE_OPTIONS "${_opts}")
    if(_fst_${level}_quant)
      set_source_files_properties(${_fst_${level}_quant} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off;${_opts}")
    endif()
    target_compile_definitions(fastensors PRIVATE FASTENSORS_HAVE_${_upper}_KERNELS=1)
  endforeach()
endif()
