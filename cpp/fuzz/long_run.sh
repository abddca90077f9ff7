#!/usr/bin/env bash
# The long fuzzing run behind the figures in docs/security.md: each target
# runs until it has executed RUNS inputs (10 million by default), starting
# from the seed corpus, then the corpus it grew is replayed once to report its
# size and coverage. A finding stops the run with libFuzzer's crash report and
# leaves the input under build/fuzz/long/<target>/.
#
#   cpp/fuzz/long_run.sh                    # fuzz_header and fuzz_file
#   JOBS=2 RUNS=1000000 cpp/fuzz/long_run.sh fuzz_slice
#
# JOBS parallel libFuzzer processes share one corpus; each runs RUNS/JOBS
# inputs. Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-10000000}
jobs=${JOBS:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_header fuzz_file)
build=build/fuzz
# A tmpfs for the files fuzz_file and fuzz_slice write on every input.
[ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=${TMPDIR:-/dev/shm}

if [ ! -x "$build/cpp/fuzz/${targets[0]}" ]; then
  CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASTENSORS_BUILD_FUZZERS=ON \
    -DFASTENSORS_SANITIZE=ON -DFASTENSORS_INSTALL=OFF
fi
cmake --build "$build" -j "$(nproc)"

seeds() {  # the seed corpus of a target
  case "$1" in
    fuzz_header | fuzz_file) echo cpp/fuzz/corpus/header cpp/fuzz/corpus/files cpp/fuzz/corpus/malformed cpp/fuzz/regressions ;;
    *) echo "cpp/fuzz/corpus/$1" ;;
  esac
}

for target in "${targets[@]}"; do
  work="$build/long/$target"
  rm -rf "$work" && mkdir -p "$work/corpus"
  for dir in $(seeds "$target"); do
    if [ -d "$dir" ]; then find "$dir" -maxdepth 1 -type f ! -name '*.md' -exec cp {} "$work/corpus/" \; ; fi
  done
  dict=()
  case "$target" in fuzz_header | fuzz_file) dict=(-dict="$PWD/cpp/fuzz/header.dict") ;; esac
  bin="$PWD/$build/cpp/fuzz/$target"
  start=$(date +%s)
  parallel=()
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
  (cd "$work" && "$bin" corpus ${dict[@]+"${dict[@]}"} ${parallel[@]+"${parallel[@]}"} -runs=$((runs / jobs)) \
      -print_final_stats=1 -artifact_prefix=./ >run.log 2>&1) || {
    echo "$target: FINDING (see $work)"; tail -n 40 "$work"/run.log "$work"/fuzz-*.log 2>/dev/null; exit 1; }
  secs=$(( $(date +%s) - start ))
  logs=("$work/run.log"); [ "$jobs" -gt 1 ] && logs=("$work"/fuzz-*.log)
  execs=$(cat "${logs[@]}" | awk -F: '/stat::number_of_executed_units/ {s += $NF} END {print s}')
  final=$("$bin" "$work/corpus" -runs=0 2>&1 | grep -E 'INITED|DONE' | tail -n 1)
  echo "$target: $execs executions in ${secs}s ($(( execs / (secs > 0 ? secs : 1) )) exec/s over $jobs job(s)), no finding"
  echo "$target: corpus replay: $final"
done
