#!/usr/bin/env bash
# The GPU check, one command (docs/gpu.md): on a machine with a CUDA GPU and a Python that already
# has torch, make the project importable without touching that torch, run the CUDA tests, then the
# GPU benchmarks, and write everything to one results file.
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (about 8 minutes at most)
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   # the same steps on a CPU, tiny sizes, pip --dry-run
#   bash benchmarks/gpu_check.sh download-wheels  # beforehand, on a machine with a package registry
#
# Results: $OUT/gpu_results.md when OUT is set (the device tool collects $OUT), else
# ./gpu_results/gpu_results.md; bench_gpu.json beside it. Every step has a timeout, and the steps
# share one budget (GPU_CHECK_BUDGET seconds, default 480): a step that would outlast it is cut
# short and says so, and the next steps still run.
#
# Environment: PYTHON (default python3), WHEELS (default shared/wheels: the project's non-torch
# dependencies as wheels, for a machine without a registry), CIFAR (CIFAR-10 as
# ROOT/{train,test}/<class>/*.jpg; default: bench_gpu.py looks in the shared datasets, else fake data),
# GPU_CHECK_ONLY (a subset of "tests bench tta": rerun only those steps).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$PWD
SELF=$REPO/benchmarks/gpu_check.sh
PY=${PYTHON:-python3}
MODE=${GPU_CHECK_DEVICE:-cuda}
WHEELS=${WHEELS:-$REPO/shared/wheels}
RESULTS_DIR=${OUT:-$REPO/gpu_results}
RESULTS=$RESULTS_DIR/gpu_results.md
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET:-480}))
# The checkout itself is imported (nothing installed into site-packages, so torch is never touched);
# PYTHONPATH reaches the torchrun and CLI subprocesses of the tests too.
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

# The project's dependencies from pyproject.toml (one source of truth), minus torch and torchvision
# (they must match the machine's CUDA build), plus what the tests need.
requirements() {
    "$PY" - "$REPO/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
deps = re.findall(r'"([^"]+)"', block)
skip = ("torch", "torchvision")
print("\n".join([d for d in deps if re.split(r"[<>=!~ \[]", d)[0] not in skip] + ["pytest>=8"]))
EOF
}

download_wheels() {
    # For the GPU machine's Python (TARGET_PYTHON, e.g. 3.12) and platform; run where pip reaches a registry.
    local dest=${1:-$WHEELS} target=${TARGET_PYTHON:-}
    mkdir -p "$dest" || exit 2
    requirements > "$dest/requirements.txt" || exit 2
    local platform=()
    [[ -n $target ]] && platform=(--only-binary=:all: --python-version "$target" --platform manylinux2014_x86_64
                                  --platform manylinux_2_28_x86_64)
    "$PY" -m pip download -d "$dest" "${platform[@]}" -r "$dest/requirements.txt" || exit 1
    echo "wheels in $dest; torchvision is not among them (it must match the GPU machine's torch)"
}

# step NAME LIMIT COMMAND...: run with a timeout cut to the budget left; its output goes to the results.
step() {
    local name=$1 limit=$2 left=$((DEADLINE - SECONDS)) rc start=$SECONDS
    shift 2
    (( limit > left )) && limit=$left
    {
        echo; echo "## $name"; echo; echo '```'
        echo "\$ $*"
    } | tee -a "$RESULTS"
    if (( limit < 15 )); then
        echo "skipped: the budget (GPU_CHECK_BUDGET) is spent" | tee -a "$RESULTS"
        rc=124
    else
        timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$RESULTS"
        rc=${PIPESTATUS[0]}
    fi
    (( rc == 124 || rc == 137 )) && echo "TIMED OUT after ${limit} s" | tee -a "$RESULTS"
    { echo '```'; echo; echo "$name: exit $rc in $((SECONDS - start)) s"; } | tee -a "$RESULTS"
    STATUS+=("$name: exit $rc in $((SECONDS - start)) s")
    (( rc == 0 )) || FAILED=1
}

describe() {
    date -u +"date: %Y-%m-%d %H:%M UTC"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown); mode: $MODE"
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c 'import platform, torch
print(f"python {platform.python_version()}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
      f"cuDNN {torch.backends.cudnn.version()}; cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name()}; bf16 supported: {torch.cuda.is_bf16_supported()}")'
}

# Install the non-torch dependencies from $WHEELS (offline), else from a registry; the installed
# torch is pinned by a constraint, so pip can neither upgrade nor replace it.
install() {
    local tmp reqs=() dry=()
    tmp=$(mktemp -d)
    requirements > "$tmp/requirements.txt" || return 2
    "$PY" -c 'import torch; print(f"torch=={torch.__version__}")' > "$tmp/constraints.txt" || return 2
    # A CPU check proves the resolution without changing the environment; from the wheels, it
    # resolves every dependency as if none were installed, so a missing wheel shows here.
    [[ $MODE == cpu ]] && dry=(--dry-run)
    reqs=(--quiet -r "$tmp/requirements.txt" -c "$tmp/constraints.txt" "${dry[@]}")
    local offline=(--no-index --find-links "$WHEELS" "${reqs[@]}")
    [[ $MODE == cpu ]] && offline+=(--ignore-installed)
    if [[ -d $WHEELS ]] && "$PY" -m pip install "${offline[@]}"; then
        echo "installed from $WHEELS${dry:+ (dry run: resolved from the wheels alone, nothing changed)}"
    elif "$PY" -m pip install "${reqs[@]}"; then
        echo "installed from the package registry${dry:+ (dry run: nothing changed)}"
    else
        echo "could not install the dependencies (no usable $WHEELS, no registry): the steps below may fail"
        return 1
    fi
    "$PY" -c 'import torchvision' 2> /dev/null || echo "torchvision is missing: install the one matching torch"
}

# GPU_CHECK_ONLY="tests bench tta" (any of them) runs only those steps, e.g. a rerun of one cut short.
wanted() {
    [[ -z ${GPU_CHECK_ONLY:-} || " $GPU_CHECK_ONLY " == *" $1 "* ]]
}

main() {
    local bench_args=(--device "$MODE") tests=(tests/test_cuda.py)
    [[ $MODE == cpu ]] && bench_args+=(--quick --repeats 1 --data fake)
    [[ -n ${CIFAR:-} ]] && bench_args+=(--data-root "$CIFAR")
    mkdir -p "$RESULTS_DIR" || exit 2
    echo "# GPU check ($(date -u +%FT%TZ))" > "$RESULTS"
    STATUS=() FAILED=0
    step "machine" 30 bash "$SELF" _describe
    if [[ $MODE == cuda ]] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "no CUDA GPU visible to $PY: nothing to check (GPU_CHECK_DEVICE=cpu checks the script)" | tee -a "$RESULTS"
        exit 1
    fi
    step "install (torch untouched)" 120 bash "$SELF" _install
    wanted tests && step "CUDA tests" 220 "$PY" -m pytest -q -p no:cacheprovider --durations=10 "${tests[@]}"
    wanted bench && step "GPU benchmarks" 200 "$PY" benchmarks/bench_gpu.py "${bench_args[@]}" \
        --json "$RESULTS_DIR/bench_gpu.json"
    wanted tta && step "time to 80%" 300 "$PY" benchmarks/bench_gpu.py "${bench_args[@]}" --only time_to_accuracy \
        --json "$RESULTS_DIR/bench_gpu_tta.json"
    { echo; echo "## summary"; echo; printf -- '- %s\n' "${STATUS[@]}"; } | tee -a "$RESULTS"
    echo "results: $RESULTS"
    return "$FAILED"  # 1 when any step failed or was cut short
}

case ${1:-} in
    download-wheels) download_wheels "${2:-}" ;;
    _describe) describe ;;  # steps run under timeout, which needs a program: this script again
    _install) install ;;
    "") main ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [download-wheels [DIR]]" >&2; exit 2 ;;
esac
