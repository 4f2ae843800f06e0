#!/usr/bin/env bash
# Stage real models, wheels and the llama.cpp sources on a lent GPU machine (docs/gpu.md).
#
# One call to the machine carries at most 64 MiB, and the machine keeps /tmp only while it stays
# warm (30 s after a call). So a model travels in pieces, one call each, back to back, and is
# put together under /tmp there. The slow builds (llama.cpp with CUDA, exllamav2's extension) are
# started detached by the first call and run while the pieces arrive.
#
# Here, in the repository root:
#   bash tests/gpu/stage.sh snapshot [FILE...]   qgate at HEAD (plus FILE... from the working tree)
#                                                into .gpusnap/: what is installed there, so other
#                                                people's half-finished edits never travel
#   bash tests/gpu/stage.sh llama-src SDIST      llama-cpp-python's sdist trimmed to what a CUDA
#                                                build needs -> .whl/llama-src.tar.gz (8 MB)
#   bash tests/gpu/stage.sh split FILE...        FILE... in pieces of <= PIECE_MIB MiB (default 61)
#                                                under .gpupieces/, with a MANIFEST of sha256 sums;
#                                                prints the calls that carry them
# There, from the repository root (each line one call; carry as printed by `split`):
#   bash tests/gpu/stage.sh setup                install .whl/ and .gpusnap/ into $SITE, copy
#                                                .gpusnap/ to $CODE, start the builds detached
#                                                (carry .whl .gpusnap; BUILDS="llama" skips exl2)
#   bash tests/gpu/stage.sh code                 install .gpusnap/ again and refresh $CODE
#   bash tests/gpu/stage.sh launch NAME MODEL [STEPS]   $CODE/tests/gpu/real_models.sh, detached
#   bash tests/gpu/stage.sh receive              store the carried pieces, assemble every file
#                                                whose pieces are all there, check its sha256
#   bash tests/gpu/stage.sh status               builds and files so far
#   bash tests/gpu/stage.sh wait NAME...         block until the builds NAME (llama, exl2) end
#   eval "$(bash tests/gpu/stage.sh env)"        PYTHONPATH, PATH, LLAMA_CPP_LIB_PATH, ...
set -uo pipefail

STAGE="${STAGE:-/tmp/qgate-stage}"      # pieces, build logs and markers
MODELS="${MODELS:-/tmp/qgate-models}"   # the assembled files
SITE="${SITE:-/tmp/site}"               # Python packages (wheels, qgate, llama_cpp)
BUILD="${BUILD:-/tmp/llama-build}"      # llama.cpp's CUDA build: libllama.so, llama-perplexity
LSRC="${LSRC:-/tmp/llama-src}"
CODE="${CODE:-/tmp/qgate-code}"         # .gpusnap copied: what the detached jobs run
PIECES=.gpupieces
PIECE_MIB="${PIECE_MIB:-61}"  # + the ~1.5 MB working tree stays under the 64 MiB a call carries

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

cmd_snapshot() {
    rm -rf .gpusnap && mkdir .gpusnap
    git archive HEAD | tar -x -C .gpusnap
    for f in "$@"; do mkdir -p ".gpusnap/$(dirname "$f")" && cp "$f" ".gpusnap/$f"; done
    echo "snapshot of $(git rev-parse --short HEAD) in .gpusnap/ (+ $# files from the working tree)"
}

cmd_llama_src() {
    local sdist=$1 work
    work=$(mktemp -d)
    tar -xzf "$sdist" -C "$work"
    local top=("$work"/llama_cpp_python-*)
    mkdir -p "$work/out" .whl
    cp -r "$top/vendor/llama.cpp" "$work/out/llama.cpp"
    cp -r "$top/llama_cpp" "$work/out/llama_cpp_py"
    # vocabularies, docs, tests, the web UI and server: 130 MB a CUDA build of the library and
    # llama-perplexity does not need
    rm -rf "$work/out/llama.cpp/"{models,docs,benches,media,tests,tools/ui,tools/server,.github}
    tar -czf .whl/llama-src.tar.gz -C "$work/out" .
    rm -rf "$work"
    ls -l .whl/llama-src.tar.gz
}

cmd_split() {
    mkdir -p "$PIECES"
    local manifest="$PIECES/MANIFEST" max=$((PIECE_MIB * 1024 * 1024))
    : >"$manifest"
    for file in "$@"; do
        local name size count piece
        name=$(basename "$file")
        size=$(stat -c %s "$file")
        count=$(((size + max - 1) / max))
        piece=$(((size + count - 1) / count))
        rm -f "$PIECES/$name".p*
        split -b "$piece" -d -a 2 "$file" "$PIECES/$name.p"
        printf 'file\t%s\t%s\t%s\t%s\n' "$name" "$size" "$(sha256sum "$file" | cut -d' ' -f1)" \
            "$count" >>"$manifest"
        for p in "$PIECES/$name".p*; do
            printf 'piece\t%s\t%s\t%s\n' "$(basename "$p")" "$name" \
                "$(sha256sum "$p" | cut -d' ' -f1)" >>"$manifest"
        done
    done
    echo "pieces in $PIECES/ (at most $PIECE_MIB MiB each); one call each, back to back:"
    grep '^piece' "$manifest" | while IFS=$'\t' read -r _ piece _ _; do
        echo "  carry [\"$PIECES/MANIFEST\", \"$PIECES/$piece\"]  command: bash tests/gpu/stage.sh receive"
    done
}

cmd_receive() {
    mkdir -p "$STAGE/pieces" "$MODELS"
    local manifest="$PIECES/MANIFEST"
    [ -f "$manifest" ] || { echo "no $manifest carried"; return 1; }
    cp "$manifest" "$STAGE/MANIFEST"
    local piece file want
    while IFS=$'\t' read -r kind piece file want; do
        [ "$kind" = piece ] && [ -f "$PIECES/$piece" ] || continue
        if [ "$(sha256sum "$PIECES/$piece" | cut -d' ' -f1)" = "$want" ]; then
            mv "$PIECES/$piece" "$STAGE/pieces/$piece" && echo "received $piece"
        else
            echo "CORRUPT piece $piece (sha256 differs): dropped"
            rm -f "$PIECES/$piece"
        fi
    done <"$manifest"
    assemble
}

assemble() {
    local manifest="$STAGE/MANIFEST" name size sha count
    while IFS=$'\t' read -r kind name size sha count; do
        [ "$kind" = file ] || continue
        if [ -f "$MODELS/$name" ]; then echo "have $name"; continue; fi
        local have
        have=$(find "$STAGE/pieces" -name "$name.p*" | wc -l)
        if [ "$have" -lt "$count" ]; then echo "$name: $have/$count pieces"; continue; fi
        cat "$STAGE/pieces/$name".p* >"$MODELS/$name.part"
        if [ "$(sha256sum "$MODELS/$name.part" | cut -d' ' -f1)" = "$sha" ]; then
            mv "$MODELS/$name.part" "$MODELS/$name"
            rm -f "$STAGE/pieces/$name".p*
            echo "ASSEMBLED $MODELS/$name ($size bytes, sha256 ok)"
        else
            echo "ASSEMBLY FAILED for $name: sha256 differs"
            rm -f "$MODELS/$name.part"
        fi
    done <"$manifest"
}

cmd_setup() {
    local t
    t=$(now)
    mkdir -p "$STAGE" "$SITE"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(), "transformers", transformers.__version__)'
    nvcc --version | tail -1
    local wheels
    wheels=$(shopt -s nullglob; echo .whl/*.whl .whl/awq/*.whl .whl/awq/fallback/*.whl)
    # shellcheck disable=SC2086  # one word per wheel
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" $wheels || return 3
    # --upgrade: pip leaves a package already in a --target folder alone without it
    cmd_code || return 3
    rm -rf "$LSRC" && mkdir -p "$LSRC" && tar -xzf .whl/llama-src.tar.gz -C "$LSRC" || return 3
    rm -rf "$SITE/llama_cpp" && cp -r "$LSRC/llama_cpp_py" "$SITE/llama_cpp"
    echo "installed into $SITE in $(since "$t") s"
    # the working tree is sent again by every call: the detached jobs run a copy of this script
    cp "$0" "$STAGE/stage.sh"
    rm -f "$STAGE"/{llama,exl2}.{rc,seconds}
    for b in ${BUILDS:-llama exl2}; do  # BUILDS=llama when no EXL2 work is planned
        setsid nohup bash "$STAGE/stage.sh" "build-$b" >"$STAGE/$b.log" 2>&1 </dev/null &
        echo "build $b started detached: $STAGE/$b.log"
    done
}

cmd_code() {
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade \
        --target "$SITE" ./.gpusnap || return 3
    rm -rf "$CODE" && cp -r .gpusnap "$CODE" && echo "qgate and its scripts: $SITE, $CODE"
}

cmd_launch() {  # NAME MODEL [STEPS]; POLICY, REF_DTYPE, AWQ... pass through the environment
    mkdir -p "${RESULTS:-/tmp/qgate-results}/$1"
    setsid nohup bash "$CODE/tests/gpu/real_models.sh" "$@" >/dev/null 2>&1 </dev/null &
    echo "launched: $CODE/tests/gpu/real_models.sh $* (log: ${RESULTS:-/tmp/qgate-results}/$1/pipeline.log)"
}

cmd_build_llama() {
    local t rc
    t=$(now)
    cmake -S "$LSRC/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF \
        -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
        && cmake --build "$BUILD" --target ${LLAMA_TARGETS:-llama llama-perplexity} -j "$(nproc)"
    rc=$?
    since "$t" >"$STAGE/llama.seconds"
    if [ $rc = 0 ]; then
        ls -l "$BUILD/bin"
        # llama-cpp-python loads libllama.so from $LLAMA_CPP_LIB_PATH (llama_cpp/llama_cpp.py)
        LLAMA_CPP_LIB_PATH="$BUILD/bin" PYTHONPATH="$SITE" python3 -c \
            'import llama_cpp; print("llama_cpp", llama_cpp.__version__, "GPU offload:", llama_cpp.llama_supports_gpu_offload())'
        rc=$?
    fi
    echo $rc >"$STAGE/llama.rc"
    echo "llama.cpp build: rc $rc in $(cat "$STAGE/llama.seconds") s"
}

cmd_build_exl2() {
    local t rc
    t=$(now)
    # exllamav2 compiles its CUDA extension on first import (cached in ~/.cache/torch_extensions)
    TORCH_CUDA_ARCH_LIST=9.0 PYTHONPATH="$SITE" python3 -c \
        'import exllamav2, exllamav2.ext; print("exllamav2", exllamav2.__version__)'
    rc=$?
    since "$t" >"$STAGE/exl2.seconds"
    echo $rc >"$STAGE/exl2.rc"
    echo "exllamav2 extension: rc $rc in $(cat "$STAGE/exl2.seconds") s"
}

cmd_status() {
    for b in llama exl2; do
        [ -f "$STAGE/$b.log" ] || continue  # not started (BUILDS)
        if [ -f "$STAGE/$b.rc" ]; then
            echo "$b build: rc $(cat "$STAGE/$b.rc") in $(cat "$STAGE/$b.seconds") s"
        else
            echo "$b build: running ($(tail -c 300 "$STAGE/$b.log" 2>/dev/null | tr '\n' ' ' | tail -c 160))"
        fi
    done
    [ -f "$STAGE/MANIFEST" ] && assemble
    ls -l "$MODELS" 2>/dev/null
}

cmd_wait() {
    for b in "$@"; do
        while [ ! -f "$STAGE/$b.rc" ]; do sleep 2; done
        echo "$b build: rc $(cat "$STAGE/$b.rc") in $(cat "$STAGE/$b.seconds") s"
        [ "$(cat "$STAGE/$b.rc")" = 0 ] || return 1
    done
}

cmd_env() {
    cat <<EOF
export PYTHONPATH="$SITE\${PYTHONPATH:+:\$PYTHONPATH}" PATH="$SITE/bin:\$PATH"
export LLAMA_CPP_LIB_PATH="$BUILD/bin" LLAMA_PERPLEXITY="$BUILD/bin/llama-perplexity"
export GPTQMODEL_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=9.0 MODELS="$MODELS" STAGE="$STAGE"
# libggml-cuda.so (CUDA 13 build) exports ~2,000 libstdc++ symbols; once torch is imported,
# libllama resolves std::ostream from it and segfaults in llama_model_load (print_info).
# The system libstdc++ loaded first wins every lookup.
export LD_PRELOAD="$(ldconfig -p | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}')"
EOF
}

case "${1:-}" in
    snapshot | split | receive | setup | code | launch | status | wait | env)
        cmd="cmd_$1"; shift; "$cmd" "$@" ;;
    llama-src) shift; cmd_llama_src "$@" ;;
    build-llama) cmd_build_llama ;;
    build-exl2) cmd_build_exl2 ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
esac
