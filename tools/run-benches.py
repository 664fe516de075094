#!/usr/bin/env python3
"""Run every bench/*.py script and collect their results.

Each benchmark script prints a JSON object on the last line of its standard
output.  This runner executes them one after another (sorted by name) with
the interpreter it runs under, echoes their output, and writes the list of
those last-line objects to --out.  A script that fails, times out or whose
last line is not a JSON object is recorded as
{"bench": NAME, "error": "..."} and makes the runner exit 1 after all
scripts ran.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tools import bench_targets  # noqa: E402


def run_one(path, timeout):
    name = path.stem
    print(f"=== bench {name} ({path})", flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=None,  # stream straight through
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        sys.stdout.write(out)
        return {"bench": name, "error": f"timed out after {timeout}s"}
    sys.stdout.write(proc.stdout)
    elapsed = time.monotonic() - t0
    print(f"=== bench {name}: exit {proc.returncode} in {elapsed:.1f}s",
          flush=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except ValueError as exc:
            parse_error = f"last line is not JSON: {exc}"
        else:
            if not isinstance(result, dict):
                result, parse_error = None, "last line is not a JSON object"
    else:
        parse_error = "no output"
    if proc.returncode != 0:
        # Keep what the script said about its failure, if anything.
        result = dict(result or {})
        result.setdefault("bench", name)
        result["error"] = result.get("error") or \
            f"exit status {proc.returncode}"
        result["exit_status"] = proc.returncode
        return result
    if result is None:
        return {"bench": name, "error": parse_error}
    result.setdefault("bench", name)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default="bench")
    ap.add_argument("--out", default="bench/results.json")
    ap.add_argument("--timeout", type=float, default=1200.0,
                    help="per-script timeout in seconds")
    args = ap.parse_args()

    scripts = sorted(p for p in pathlib.Path(args.dir).glob("*.py")
                     if not p.name.startswith("_"))
    results = [run_one(p, args.timeout) for p in scripts]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(bench_targets.render(bench_targets.verdicts(results)))
    failed = [r["bench"] for r in results if "error" in r]
    print(f"wrote {len(results)} result(s) to {out}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
