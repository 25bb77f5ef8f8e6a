"""Compare two results directories of a study: the numbers must be the same, bit for bit.

    python scripts/compare_results.py BEFORE AFTER [--ignore config.json] [--allow-new]

Every file of BEFORE must exist in AFTER with the same content, read by kind:

- ``.npy`` / ``.npz`` / ``.safetensors``: every array by name, dtype, shape and bytes;
- ``.json``: equal once wall-clock fields are dropped (``seconds``, ``finished``,
  ``wall_seconds``, ``unit_seconds``, ``reduce_seconds``: they differ between any two runs);
- anything else: bytes.

HTML, logs and the mask store's per-unit compute times (``*.seconds.npy``) are not results
and are skipped. Files only AFTER has, and JSON fields only
AFTER has, are listed (a newer layout may add integrity data: checksums, fingerprints);
``--allow-new`` accepts them, otherwise they fail the comparison. ``--ignore`` skips paths
(relative, fnmatch patterns), e.g. a config whose schema changed, or ``timings*.json`` (a log
of what each run computed); their JSON differences are still printed for the record. Exit
status 0: same.

Example:
    >>> python scripts/compare_results.py /work/baselines/ng-before results/ng-after
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

WALL_CLOCK = {"seconds", "finished", "wall_seconds", "unit_seconds", "reduce_seconds"}
# not results: pages, logs, locks, and the mask store's per-unit compute times (wall clock)
SKIPPED = ("*.html", "*.log", "*.lock", "*.seconds.npy")


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npy / .npz / .safetensors file, by name."""
    if path.suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    from safetensors.numpy import load_file

    return load_file(str(path))


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    problems = []
    if a.keys() != b.keys():
        problems.append(f"arrays only in one: {sorted(a.keys() ^ b.keys())}")
    for name in sorted(a.keys() & b.keys()):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{name or 'array'}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        elif x.tobytes() != y.tobytes():
            problems.append(f"{name or 'array'}: values differ")
    return problems


def without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


def json_differences(a: Any, b: Any, added: list[str], where: str = "") -> list[str]:
    """Differences of ``a`` (before) and ``b`` (after); fields only ``b`` has go to ``added``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(a.keys() | b.keys(), key=str):
            if key not in b:
                out.append(f"{where}{key}: only before ({a[key]!r:.80})")
            elif key not in a:
                added.append(f"{where}{key}")
            else:
                out += json_differences(a[key], b[key], added, f"{where}{key}.")
        return out
    if a != b:
        return [f"{where.rstrip('.')}: {a!r:.80} before, {b!r:.80} after"]
    return []


def compare_file(a: Path, b: Path, added: list[str]) -> list[str]:
    if a.suffix in (".npy", ".npz", ".safetensors"):
        return same_arrays(arrays(a), arrays(b))
    if a.suffix == ".json":
        return json_differences(without_wall_clock(json.loads(a.read_text())),
                                without_wall_clock(json.loads(b.read_text())), added)
    return [] if a.read_bytes() == b.read_bytes() else ["bytes differ"]


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
            and not any(fnmatch.fnmatch(p.name, s) for s in SKIPPED)}


def compare(before: Path, after: Path, ignore: list[str], allow_new: bool) -> bool:
    old, new = files(before), files(after)
    ok = True
    for rel in sorted(old):
        ignored = any(fnmatch.fnmatch(rel, pattern) for pattern in ignore)
        if rel not in new:
            print(f"MISSING  {rel}")
            ok = ok and ignored
            continue
        added: list[str] = []
        problems = compare_file(before / rel, after / rel, added)
        if problems:
            print(f"{'IGNORED' if ignored else 'DIFFERS'}  {rel}")
            for problem in problems[:20]:
                print(f"           {problem}")
            ok = ok and ignored
        if added:
            print(f"ADDED    {rel}: {', '.join(added)}")
            ok = ok and (allow_new or ignored)
    for rel in sorted(new - old):
        print(f"NEW      {rel}")
        ok = ok and allow_new
    compared = len(old)
    print(f"{'SAME' if ok else 'DIFFERENT'}: {compared} files of {before} against {after}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", action="append", default=[],
                        help="relative path pattern not to hold against the comparison")
    parser.add_argument("--allow-new", action="store_true",
                        help="accept files only AFTER has (they are listed either way)")
    args = parser.parse_args()
    return 0 if compare(args.before, args.after, args.ignore, args.allow_new) else 1


if __name__ == "__main__":
    sys.exit(main())
