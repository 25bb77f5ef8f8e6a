#!/usr/bin/env bash
# Issue 17's acceptance on the two study commands: killed with SIGKILL midway and resumed,
# on Ray workers, and as two shards + the merge; each compared with a baseline directory by
# scripts/compare_results.py (arrays bit for bit, JSON without wall-clock fields).
#
#   scripts/acceptance_variants.sh BASELINES_DIR WORK_DIR
# BASELINES_DIR holds ng-before/ and ha-before/ (the two commands run on the code before).
set -uo pipefail
base=$1
work=$2
mkdir -p "$work"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
ng=(run narrow-gate --model tiny-native --data synthetic --n 16)
ha=(run head-attribution --model tiny-llava --data synthetic --n 4 --masks 256 --alpha 0.5)
# config.json and the store's meta.json are the identity (their schema changed: fingerprints),
# timings*.json a log of this run (how many units it computed); the comparison prints their
# differences and holds everything else to the bytes
ignore=(--allow-new --ignore config.json --ignore store/meta.json --ignore 'timings*.json')
only="${ONLY:-killed shards ray}"  # which variants to run
status=0
check() {
    python scripts/compare_results.py "$1" "$2" "${ignore[@]}" | grep -v "done.json: bytes" \
        | tail -n 3 || true
    python scripts/compare_results.py "$1" "$2" "${ignore[@]}" > /dev/null || status=1
}
for study in ng ha; do
    declare -n cmd=$study
    # SIGKILL once the first units are done (Narrow Gate: 5 unit files; head attribution:
    # its mask store has units), then the same command resumes
    out="$work/$study-killed"
    if [[ " $only " == *" killed "* ]]; then
    rm -rf "$out"
    hooked-vlm "${cmd[@]}" --out "$out" > /dev/null 2>&1 &
    pid=$!
    until [ "$(find "$out" -name '*.done.json' 2>/dev/null | wc -l)" -ge 5 ] || \
          python -c "import numpy as n, sys; sys.exit(0 if n.load('$out/store/train.done.npy').sum() >= 3 else 1)" 2>/dev/null; do
        sleep 0.2
    done
    kill -9 $pid; wait $pid
    echo "$study: SIGKILLed (exit $?) with $(find "$out" -name '*.done.json' | wc -l) unit files done"
    hooked-vlm "${cmd[@]}" --out "$out" > /dev/null 2>&1 || status=1
    echo "== $study: SIGKILL + resume"; check "$base/$study-before" "$out"
    fi
    [[ " $only " == *" shards "* ]] || continue
    # two shards at once, then the merge
    out="$work/$study-shards"
    rm -rf "$out"
    hooked-vlm "${cmd[@]}" --out "$out" --shard 0/2 > /dev/null 2>&1 &
    first=$!
    hooked-vlm "${cmd[@]}" --out "$out" --shard 1/2 > /dev/null 2>&1 || status=1
    wait $first || status=1
    hooked-vlm "${cmd[@]}" --out "$out" > /dev/null 2>&1 || status=1
    echo "== $study: 2 shards + merge"; check "$base/$study-before" "$out"
    [[ " $only " == *" ray "* ]] || continue
    # Ray: two CPU workers on a private cluster
    out="$work/$study-ray"
    rm -rf "$out"
    hooked-vlm "${cmd[@]}" --out "$out" --ray local --workers 2 > "$work/$study-ray.log" 2>&1 \
        || { status=1; tail -n 5 "$work/$study-ray.log"; }
    echo "== $study: Ray, 2 workers"; check "$base/$study-before" "$out"
done
exit $status
