#!/usr/bin/env bash
# The EXL2 (and AWQ) backends on a real GPU, end to end (docs/gpu.md):
#   1. install qgate and the carried wheels (.whl/: exllamav2 0.3.2, fastparquet, cramjam,
#      websockets, junit-xml) into /tmp/site, beside the machine's own torch and transformers;
#   2. build and briefly train a small Llama with transformers (tests/gpu/build_models.py);
#   3. convert it to EXL2 at 4.0 and 2.5 bpw with exllamav2's converter (one measurement pass,
#      reused for both) and, when gptqmodel is importable, quantize it to AWQ W4;
#   4. gate the quants against the Hugging Face reference with the production policy and write
#      JUnit, HTML, JSON and Markdown reports, plus the logs, under $OUT.
# Run from the repository root on the GPU machine: bash tests/gpu/run_gpu.sh
# The gate is expected to FAIL (exit 1): the 2.5 bpw quant must not pass production.
set -uo pipefail

OUT="${OUT:-$PWD/gpu-out}"
WORK="${WORK:-/tmp/qgate-gpu}"
SITE="${SITE:-/tmp/site}"
DETAILS="$WORK/details"  # side files, returned as one archive (the device returns 8 files)
rm -rf "$DETAILS"
mkdir -p "$OUT" "$WORK" "$DETAILS"
trap 'tar -czf "$OUT/details.tar.gz" -C "$DETAILS" . 2>/dev/null' EXIT
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/run_gpu.log") 2>&1

step() { echo "== $(date +%T) $*"; }
elapsed() { echo "   ($1: $(( $(date +%s) - $2 )) s)" | tee -a "$OUT/timings.txt"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)' || exit 3

step "install the carried wheels and qgate into $SITE"
t=$(date +%s)
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || exit 3
fi
# --upgrade: on a warm machine $SITE already holds the last run's qgate, and pip leaves an
# existing package in a --target folder alone without it
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade \
    --target "$SITE" . || exit 3
if compgen -G ".whl/awq/*.whl" >/dev/null; then
    # gptqmodel 7.5 and the small packages it imports (pillow, requests, threadpoolctl are on
    # the machine); --no-deps keeps pip from pulling datasets/torchao and downgrading numpy.
    # pypcre is an sdist (a C extension); a pure-Python stand-in is the fallback
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/awq/*.whl || exit 3
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade \
        --target "$SITE" .whl/awq/pypcre-*.tar.gz \
        || python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade \
            --target "$SITE" .whl/awq/fallback/*.whl || exit 3
fi
export GPTQMODEL_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
# run the installed qgate, not the source tree in the current directory
qg() { (cd "$WORK" && python3 -m qgate "$@"); }
elapsed install "$t"
qg plugins | tee "$DETAILS/plugins.txt"

step "import exllamav2 (its CUDA extension compiles on first use, about 2 minutes)"
t=$(date +%s)
python3 -c 'import exllamav2, exllamav2.ext; print("exllamav2", exllamav2.__version__)' || exit 3
elapsed "exllamav2 import/compile" "$t"

HF="$WORK/model-hf"
step "build and train the reference model: $HF"
t=$(date +%s)
rm -rf "$HF"
python3 tests/gpu/build_models.py "$HF" --steps "${TRAIN_STEPS:-400}" || exit 3
cp "$HF/training.json" "$DETAILS/training.json"
elapsed "build+train" "$t"

step "EXL2 measurement pass"
t=$(date +%s)
CAL=(-l 1024 -r 32 -ml 1024 -mr 8)
rm -rf "$WORK/exl2-measure"
python3 -m exllamav2.conversion.convert_exl2 -i "$HF" -o "$WORK/exl2-measure" -nr \
    -om "$WORK/measurement.json" "${CAL[@]}" || exit 3
cp "$WORK/measurement.json" "$DETAILS/exl2-measurement.json"
elapsed "exl2 measurement" "$t"

SUBJECTS=()
for BPW in 4.0 2.5; do
    step "EXL2 conversion at $BPW bpw"
    t=$(date +%s)
    rm -rf "$WORK/exl2-work-$BPW" "$WORK/model-exl2-$BPW"
    python3 -m exllamav2.conversion.convert_exl2 -i "$HF" -o "$WORK/exl2-work-$BPW" -nr \
        -m "$WORK/measurement.json" -cf "$WORK/model-exl2-$BPW" -b "$BPW" "${CAL[@]}" || exit 3
    elapsed "exl2 $BPW" "$t"
    SUBJECTS+=("$WORK/model-exl2-$BPW")
done

if python3 -c 'import gptqmodel' 2>/dev/null; then
    step "AWQ quantization (gptqmodel)"
    t=$(date +%s)
    rm -rf "$WORK/model-awq"
    if python3 -c 'import sys; sys.path.insert(0, "tests/gpu"); import build_models as b; from pathlib import Path; sys.exit(0 if b.quantize_awq(Path(sys.argv[1]), Path(sys.argv[2])) else 1)' \
        "$HF" "$WORK/model-awq"; then
        SUBJECTS+=("$WORK/model-awq")
    else
        echo "AWQ quantization failed: gating the EXL2 quants only"
    fi
    elapsed awq "$t"
else
    echo "gptqmodel is not installed: no AWQ subject (carry its wheel to include one)"
fi

step "inspect"
for M in "$HF" "${SUBJECTS[@]}"; do
    qg inspect "$M" --json > "$DETAILS/inspect-$(basename "$M").json" || exit 3
    qg inspect "$M"
done

step "qgate check ${SUBJECTS[*]} --reference $HF --policy production"
t=$(date +%s)
qg check "${SUBJECTS[@]}" --reference "$HF" --policy production \
    --reference-backend hf \
    --junit "$OUT/junit.xml" --html "$OUT/report.html" --json "$OUT/results.json" \
    --markdown "$OUT/summary.md" --profile
CODE=$?
elapsed "qgate check" "$t"
echo "qgate check exit code: $CODE (expected 1: the 2.5 bpw quant fails production)"
echo "qgate check exit code: $CODE" >> "$OUT/timings.txt"
cat "$OUT/summary.md" 2>/dev/null || true

step "scoring speed: qgate's EXL2 pass vs exllamav2's own perplexity loop"
for BPW in 4.0 2.5; do
    python3 benchmarks/exl2_speed.py --subject "$WORK/model-exl2-$BPW" --reference "$HF" \
        --chunks "${SPEED_CHUNKS:-16}" | tee -a "$OUT/exl2-speed.txt"
done
exit "$CODE"
