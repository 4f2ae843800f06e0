#!/usr/bin/env bash
# A real model on a lent GPU, every format side by side with its own tool (docs/gpu.md):
#   twin   the Hugging Face twin of the GGUF (tests/gpu/twin.py), plus the folder exllamav2 reads
#   exl2   exllamav2's converter: one measurement pass, then $EXL2_BITS (8.0 6.0 4.0 3.0)
#   gguf   the GGUF ladder with llama.cpp (CUDA build): F16 from the source, Q8_0 Q4_K_M Q2_K from F16
#   awq    AWQ W4 g128 with gptqmodel (tests/gpu/build_models.py), unless AWQ=0
#   gate   qgate check --policy $POLICY of each family against the twin (and the GGUF ladder
#          against its F16), in parallel, with JUnit / HTML / JSON / Markdown reports
#   agree  benchmarks/gpu_agreement.py: qgate vs exllamav2's forward pass, a plain transformers
#          loop and llama-perplexity --kl-divergence, on the same tokens
#   speed  (run it alone) qgate's passes vs exllamav2's loop and llama-perplexity, and the GGUF
#          ladder's whole gate again with the reference cache warm
#
#   bash tests/gpu/real_models.sh NAME SOURCE.gguf [STEP,STEP...]
#
# after `tests/gpu/stage.sh setup` (and `receive` of SOURCE). Settings from the environment:
# POLICY, REF_DTYPE (the Hugging Face reference's dtype: float32 for Gemma 3), AWQ=0, LANES
# (exl2,gguf,awq), EXL2_BITS, EXL2_ROWS, EXL2_MEASURE_ROWS, AGREE_CHUNKS, PARALLEL_THREADS,
# TOKENIZER_FROM (twin.py --tokenizer-from). Everything lands in
# $RESULTS/NAME (default /tmp/qgate-results/NAME); each step's seconds in timings.txt there.
# A step that fails is logged and the others still run.
set -uo pipefail

NAME=$1
SOURCE=$2
STEPS=",${3:-twin,exl2,gguf,awq,gate,agree},"
HERE=$(cd "$(dirname "$0")/../.." && pwd)
W="${WORK:-/tmp/qgate-gpu}/$NAME"
R="${RESULTS:-/tmp/qgate-results}/$NAME"
POLICY="${POLICY:-$HERE/tests/gpu/cuda-production.yaml}"
AWQ_POLICY="$HERE/tests/gpu/cuda-production.yaml" # AWQ kernels run in float16
REF_DTYPE="${REF_DTYPE:-float16}"                  # POLICY's, for the speed benchmark
EXL2_BITS="${EXL2_BITS:-8.0 6.0 4.0 3.0}"
# calibration cut from the converter's defaults (-r 100 -mr 16) to fit a lent machine's minutes
CAL=(-l 2048 -r "${EXL2_ROWS:-16}" -ml 2048 -mr "${EXL2_MEASURE_ROWS:-8}")
mkdir -p "$W" "$R"
cd "$W" || exit 3 # never the repository copy: each call to the machine re-syncs it
LANES=",${LANES:-exl2,gguf,awq},"
eval "$(bash "$HERE/tests/gpu/stage.sh" env)"
export QGATE_CACHE_DIR="$W/cache"
exec >>"$R/pipeline.log" 2>&1

has() { [[ $STEPS == *",$1,"* ]]; }
now() { date +%s.%N; }
took() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
step() { echo "== $(date +%T) $NAME: $*"; }
record() { echo "$1 $2 s (rc $3)" | tee -a "$R/timings.txt"; }
timed() { # timed LABEL LOG COMMAND...: run it, log it, record its seconds and exit code
    local label=$1 log=$2 t rc
    shift 2
    t=$(now)
    "$@" >"$log" 2>&1
    rc=$?
    record "$label" "$(took "$t")" "$rc"
    return "$rc"
}
# the installed qgate, never a source tree in the current directory
qg() { (cd "$W" && python3 -m qgate "$@"); }

HF="$W/hf"
HF_EXL2="$W/hf-exl2"
G="$W/gguf"
LADDER=("$G/$NAME-f16.gguf" "$G/$NAME-q8_0.gguf" "$G/$NAME-q4_k_m.gguf" "$G/$NAME-q2_k.gguf")

ladder() { # SOURCE OUT NAME: F16 from the source (dequantized, as the twin is), quants from F16
    python3 - "$@" <<'PY'
import sys, time
from pathlib import Path
from qgate_gguf.quantize import quantize
source, out, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
f16 = out / f"{name}-f16.gguf"
for ft, src, dst in [("F16", source, f16)] + [
    (ft, f16, out / f"{name}-{ft.lower()}.gguf") for ft in ("Q8_0", "Q4_K_M", "Q2_K")
]:
    started = time.perf_counter()
    quantize(src, dst, ft)
    print(f"{ft} {time.perf_counter() - started:.1f} s", flush=True)
PY
}

awq() { # HF OUT
    python3 -c 'import sys; sys.path.insert(0, sys.argv[3]); import build_models as b; from pathlib import Path; sys.exit(0 if b.quantize_awq(Path(sys.argv[1]), Path(sys.argv[2])) else 1)' \
        "$1" "$2" "$HERE/tests/gpu"
}

gate() { # LABEL POLICY REFERENCE SUBJECT...
    local label=$1 policy=$2 ref=$3
    shift 3
    [ $# -gt 0 ] || { echo "$label: no subjects"; return; }
    # shellcheck disable=SC2086 # --threads N, or nothing
    timed "gate-$label" "$R/$label.log" qg check "$@" --reference "$ref" --policy "$policy" \
        ${GATE_THREADS:+--threads $GATE_THREADS} --profile --junit "$R/$label.junit.xml" \
        --html "$R/$label.html" --json "$R/$label.json" --markdown "$R/$label.md"
}

if has twin; then
    step "HF twin of $SOURCE"
    timed twin "$R/twin.log" python3 "$HERE/tests/gpu/twin.py" "$SOURCE" "$HF" \
        --exl2-view "$HF_EXL2" ${TOKENIZER_FROM:+--tokenizer-from "$TOKENIZER_FROM"}
    cp "$HF/twin.json" "$R/twin.json"
fi

# Three lanes after the twin, side by side (up to six processes per model share the GPU and the
# 16 cores, so their timings are under contention; `speed` measures alone):
#   EXL2: measurement, conversions, gate, agreement with exllamav2 (and its full-precision floor)
#   GGUF: ladder, gates against the twin and against the F16, agreement with llama-perplexity
#   AWQ:  quantization, gate, agreement with a plain transformers loop
export OMP_NUM_THREADS="${PARALLEL_THREADS:-4}" GATE_THREADS="${PARALLEL_THREADS:-4}"
present() { for f in "$@"; do [ -e "$f" ] && echo "$f"; done; }
inspect() { for m in "$@"; do qg inspect "$m" --json >"$R/inspect-$(basename "$m").json" 2>&1; done; }
has gate && inspect "$HF"

lane_exl2() {
    bash "$HERE/tests/gpu/stage.sh" wait exl2 || return
    step "EXL2 measurement (${CAL[*]})"
    timed exl2-measure "$R/exl2-measure.log" python3 -m exllamav2.conversion.convert_exl2 \
        -i "$HF_EXL2" -o "$W/exl2-measure" -nr -om "$W/measurement.json" "${CAL[@]}" || return
    cp "$W/measurement.json" "$R/exl2-measurement.json"
    for B in $EXL2_BITS; do
        step "EXL2 $B bpw"
        HB=6
        [ "${B%%.*}" -ge 6 ] && HB=8
        rm -rf "$W/exl2-work-$B" "$W/exl2-$B"
        timed "exl2-$B" "$R/exl2-$B.log" python3 -m exllamav2.conversion.convert_exl2 \
            -i "$HF_EXL2" -o "$W/exl2-work-$B" -nr -m "$W/measurement.json" \
            -cf "$W/exl2-$B" -b "$B" -hb "$HB" "${CAL[@]}"
        rm -rf "$W/exl2-work-$B"
    done
}

lane_exl2_checks() {
    local dirs=() subjects=(--subject "exl2-fp16=$HF_EXL2") b
    for b in $EXL2_BITS; do [ -f "$W/exl2-$b/config.json" ] && dirs+=("$W/exl2-$b"); done
    for b in "${dirs[@]}"; do subjects+=(--subject "exl2=$b"); done
    if has gate && [ ${#dirs[@]} -gt 0 ]; then
        inspect "${dirs[@]}"
        gate exl2-vs-hf "$POLICY" "$HF" "${dirs[@]}" &
    fi
    has agree && timed agree-exl2 "$R/agree-exl2.log" python3 "$HERE/benchmarks/gpu_agreement.py" \
        torch --reference "$HF" "${subjects[@]}" --chunks "${AGREE_CHUNKS:-16}" \
        --json "$R/agree-exl2.json" &
    wait
}

lane_gguf() {
    if has gguf; then
        bash "$HERE/tests/gpu/stage.sh" wait llama || return
        step "GGUF ladder"
        mkdir -p "$G"
        timed gguf-ladder "$R/gguf-ladder.log" ladder "$SOURCE" "$G" "$NAME"
    fi
    local all quants subjects=() q
    mapfile -t all < <(present "${LADDER[@]}")
    mapfile -t quants < <(present "${LADDER[@]:1}")
    [ ${#all[@]} -gt 0 ] || return
    for q in "${quants[@]}"; do subjects+=(--subject "$q"); done
    if has gate; then
        inspect "${all[@]}"
        gate gguf-vs-hf "$POLICY" "$HF" "${all[@]}" &
        [ -e "${LADDER[0]}" ] && gate gguf-vs-f16 "$POLICY" "${LADDER[0]}" "${quants[@]}" &
    fi
    has agree && [ -e "${LADDER[0]}" ] && timed agree-gguf "$R/agree-gguf.log" \
        python3 "$HERE/benchmarks/gpu_agreement.py" gguf --reference "${LADDER[0]}" \
        "${subjects[@]}" --chunks "${AGREE_CHUNKS:-16}" --json "$R/agree-gguf.json" &
    wait
}

lane_awq() {
    [ "${AWQ:-1}" = 1 ] || return
    if has awq; then
        step "AWQ W4 g128"
        rm -rf "$W/awq"
        timed awq "$R/awq.log" awq "$HF" "$W/awq"
    fi
    [ -d "$W/awq" ] || return
    if has gate; then
        inspect "$W/awq"
        gate awq-vs-hf "$AWQ_POLICY" "$HF" "$W/awq" &
    fi
    has agree && timed agree-awq "$R/agree-awq.log" python3 "$HERE/benchmarks/gpu_agreement.py" \
        torch --reference "$HF" --subject "awq=$W/awq" --subject "hf-fp16=$HF" \
        --chunks "${AGREE_CHUNKS:-16}" --json "$R/agree-awq.json" &
    wait
}

if [[ $LANES == *,exl2,* ]]; then
    (
        has exl2 && lane_exl2
        lane_exl2_checks
    ) &
fi
[[ $LANES == *,gguf,* ]] && lane_gguf &
[[ $LANES == *,awq,* ]] && lane_awq &
wait
unset OMP_NUM_THREADS GATE_THREADS

if has speed; then
    step "speed (alone on the machine)"
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import gpu_agreement as g; from pathlib import Path; print(g.joined_text(Path(sys.argv[2])))' \
        "$HERE/benchmarks" "$W"
    for B in 4.0 8.0; do
        [ -d "$W/exl2-$B" ] || continue
        timed "speed-exl2-$B" "$R/speed-exl2-$B.log" python3 "$HERE/benchmarks/exl2_speed.py" \
            --subject "$W/exl2-$B" --reference "$HF" --text "$W/corpora.txt" --chunks 64 \
            --ref-dtype "$REF_DTYPE" --json "$R/speed-exl2-$B.json"
    done
    if [ -e "$G/$NAME-q4_k_m.gguf" ]; then
        timed speed-gguf "$R/speed-gguf.log" python3 "$HERE/benchmarks/gpu_agreement.py" gguf \
            --reference "${LADDER[0]}" --speed-subject "$G/$NAME-q4_k_m.gguf" --speed-chunks 64 \
            --json "$R/speed-gguf.json"
    fi
    mapfile -t all < <(present "${LADDER[@]}")
    [ ${#all[@]} -gt 0 ] && gate gguf-vs-hf-warm "$POLICY" "$HF" "${all[@]}"
fi
step "done"
touch "$R/DONE.$(echo "$STEPS" | tr -d ',' | cut -c1-24)"
