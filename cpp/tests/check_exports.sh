#!/usr/bin/env bash
# Checks what a shared library exports: its own strong symbols are the public
# C++ API (fastensors::, not fastensors::detail) and the C API (fst_*); the
# weak ones (template instantiations the C++ ABI makes visible) never name
# the JSON library, private code or anonymous namespaces. Prints each
# offending symbol as "forbidden export: ..." and exits 1 if there is any;
# exits 2 when the library exports no fst_ function at all (not the library).
#   check_exports.sh LIBRARY.so
set -euo pipefail
lib=$1
syms=$(nm -D --defined-only "$lib" | awk '{ t=$2; $1=""; $2=""; sub(/^ +/, ""); print t "\t" $0 }')
bad=0
while IFS=$'\t' read -r type name; do
  [ -n "$name" ] || continue
  pretty=$(c++filt -- "$name")
  case "$pretty" in
    *nlohmann* | *"fastensors::detail"* | *"fastensors::c_api"* | *"(anonymous namespace)"*)
      echo "forbidden export: $pretty"; bad=1; continue ;;
  esac
  case "$type" in
    T | D | B | R | G | S)  # strong definitions: only the public API
      case "$pretty" in
        fst_* | fastensors::* | "typeinfo for fastensors::"* | "typeinfo name for fastensors::"* | \
        "vtable for fastensors::"* | _init | _fini | _edata | _end | __bss_start) ;;
        *) echo "forbidden export: $pretty"; bad=1 ;;
      esac ;;
  esac
done <<<"$syms"
if ! grep -q $'\tfst_file_open$' <<<"$syms"; then
  echo "no fst_file_open in $lib: not the fastensors library" >&2
  exit 2
fi
if [ "$bad" -ne 0 ]; then exit 1; fi
echo "$lib: $(grep -c $'\tfst_' <<<"$syms") fst_* functions, $(wc -l <<<"$syms") symbols, nothing private exported"
