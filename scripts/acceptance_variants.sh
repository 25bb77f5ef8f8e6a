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
# config.json and the store's meta.json are the identity (their schema changed: fingerprints);
# the comparison prints their differences and holds everything else to the bytes
ignore=(--allow-new --ignore config.json --ignore store/meta.json)
status=0
check() {
    python scripts/compare_results.py "$1" "$2" "${ignore[@]}" | grep -v "done.json: bytes" \
        | tail -n 3 || true
    python scripts/compare_results.py "$1" "$2" "${ignore[@]}" > /dev/null || status=1
}
for study in ng ha; do
    declare -n cmd=$study
    # SIGKILL after 15 s, then the same command resumes
    out="$work/$study-killed"
    rm -rf "$out"
    timeout -s KILL 15 hooked-vlm "${cmd[@]}" --out "$out" > /dev/null 2>&1
    echo "$study: killed with exit $? after 15 s; units done: $(find "$out" -name '*.done.json' | wc -l)"
    hooked-vlm "${cmd[@]}" --out "$out" > /dev/null 2>&1 || status=1
    echo "== $study: SIGKILL + resume"; check "$base/$study-before" "$out"
    # two shards at once, then the merge
    out="$work/$study-shards"
    rm -rf "$out"
    hooked-vlm "${cmd[@]}" --out "$out" --shard 0/2 > /dev/null 2>&1 &
    first=$!
    hooked-vlm "${cmd[@]}" --out "$out" --shard 1/2 > /dev/null 2>&1 || status=1
    wait $first || status=1
    hooked-vlm "${cmd[@]}" --out "$out" > /dev/null 2>&1 || status=1
    echo "== $study: 2 shards + merge"; check "$base/$study-before" "$out"
    # Ray: two CPU workers on a private cluster
    out="$work/$study-ray"
    rm -rf "$out"
    hooked-vlm "${cmd[@]}" --out "$out" --ray local --workers 2 > "$work/$study-ray.log" 2>&1 \
        || { status=1; tail -n 5 "$work/$study-ray.log"; }
    echo "== $study: Ray, 2 workers"; check "$base/$study-before" "$out"
done
exit $status
