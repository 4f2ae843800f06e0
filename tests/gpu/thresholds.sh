#!/usr/bin/env bash
# docs/thresholds.md's table on a lent GPU: benchmarks/thresholds.py with every layer on CUDA.
#
# After `BUILDS=llama bash tests/gpu/stage.sh setup` (in the same call, so no machine time is
# spent between the last piece and the first row), from the repository root:
#   bash tests/gpu/thresholds.sh start [ARG...]  detached: wait for the llama.cpp build and for
#                                          `receive` to assemble the two source models
#                                          (gemma-3-270m-q4_k_m.gguf,
#                                          qwen2.5-coder-0.5b-instruct-q4_k_m.gguf), then run
#                                          every row (log: $THR/thresholds.log); ARG... go to
#                                          benchmarks/thresholds.py (--only ROW... to order)
#   bash tests/gpu/thresholds.sh collect   copy the record, the rendered table and the log to
#                                          $OUT; prints how far the run is
# Rows already in $THR/thresholds.json are not run again, so `start` resumes a cut-off run.
set -uo pipefail

THR="${THR:-/tmp/qgate-thresholds}"
CODE="${CODE:-/tmp/qgate-code}"
MODELS="${MODELS:-/tmp/qgate-models}"

cmd_start() {
    mkdir -p "$THR/gemma" "$THR/qwen"
    [ -f "$THR/thresholds.md" ] || cp "$CODE/docs/thresholds.md" "$THR/thresholds.md"
    # a copy: every call to the machine re-sends the working tree this script lives in
    cp "$0" "$THR/thresholds.sh"
    setsid nohup bash "$THR/thresholds.sh" run "$@" >>"$THR/thresholds.log" 2>&1 </dev/null &
    echo "started: $THR/thresholds.log"
}

cmd_run() {
    bash "$CODE/tests/gpu/stage.sh" wait llama || { echo "llama.cpp build failed"; return 3; }
    local gemma="$MODELS/gemma-3-270m-q4_k_m.gguf" qwen="$MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    until [ -f "$gemma" ] && [ -f "$qwen" ]; do sleep 2; done  # `receive` renames when whole
    # the ladder scripts take a source put in place instead of assembling it from the PyPI extras
    ln -f "$gemma" "$THR/gemma/gemma-q4_k_m.gguf" && ln -f "$qwen" "$THR/qwen/qwen-q4_k_m.gguf" \
        || return 2
    eval "$(bash "$CODE/tests/gpu/stage.sh" env)"
    # keep env's LD_PRELOAD (the system libstdc++, docs/gpu.md): without it every `qgate check`
    # of this script segfaulted (exit -11) on the H200 run of 2026-12-01; with it they ran
    cd "$CODE" || return 3
    echo "== $(date +%T) thresholds: start"
    python3 benchmarks/thresholds.py --models "$THR" --model both --gpu-layers -1 \
        --doc "$THR/thresholds.md" --record "$THR/thresholds.json" "$@"
    echo "== $(date +%T) thresholds: exit $?"
}

cmd_collect() {
    tail -n 25 "$THR/thresholds.log"
    for f in thresholds.json thresholds.md thresholds.log; do
        [ -f "$THR/$f" ] && cp "$THR/$f" "${OUT:?}/$f"
    done
}

case "${1:-}" in
    start | run | collect) cmd="cmd_$1"; shift; "$cmd" "$@" ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
esac
