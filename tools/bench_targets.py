"""Every target of a `make bench` run, met or not, in one table.

    python3 -m tools.bench_targets [bench/results.json]

Each bench script reports its targets in the `targets` object of its JSON
line (docs/benchmarks.md), in one of a few shapes, all read here:

* `{name: true | false | null}`: a verdict (null: not measured this run);
* `{name: {"met": bool, "name": ..., "ratio" | "value": ..., "limit": ...}}`
  and lists of such objects (dataplane_bench);
* `{name: number}`: a limit, not a verdict (maglev_bench puts its limits
  there and its verdicts in each row of `results`, read as well; a row's
  null is a target that does not apply to that row, not listed);
* top-level `target` / `target_<what>` objects with `met`
  (veth_rate_bench); a bench that could not measure on this host says why
  in `not_measured`, shown beside its unjudged targets.

tools/run-benches.py prints this table after the last bench; a bench that
failed is listed as such.  Unmet targets are what the table is for, so they
do not change the exit status (issue 15 keeps the ones not met, with the
reasons, in docs/benchmarks.md).
"""

import json
import sys

# Row identifiers of benches that report per-row verdicts, in order of
# preference (maglev_bench: one row per member count).
_ROW_KEYS = ('n', 'members', 'name')


def _figure(obj):
    """A short text of what was measured, from a verdict object."""
    parts = []
    for key in ('ratio', 'value'):
        if isinstance(obj.get(key), (int, float)):
            parts.append(f'{key} {obj[key]:g}')
            break
    if isinstance(obj.get('limit'), (int, float)):
        parts.append(f'limit {obj["limit"]:g}')
    return ', '.join(parts)


def _walk(name, value, out, rows=False):
    if value is None and rows:
        return  # a row's target that does not apply to that row
    if isinstance(value, bool) or value is None:
        out.append((name, value, ''))
    elif isinstance(value, dict) and 'met' in value:
        out.append((value.get('name') or name, value['met'],
                    _figure(value)))
    elif isinstance(value, dict):
        for key, sub in value.items():
            _walk(f'{name}.{key}' if name else str(key), sub, out, rows)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _walk(f'{name}[{i}]', sub, out, rows)
    # Numbers and strings are limits or notes, not verdicts.


def _row_name(row, index):
    for key in _ROW_KEYS:
        if key in row:
            return f'{key}={row[key]}'
    return str(index)


def verdicts(results):
    """[(bench, target, met: True | False | None, figure)] of a run, in the
    order of the results; a bench that failed gives one row (met False,
    figure: its error)."""
    rows = []
    for result in results:
        bench = result.get('bench', '?')
        if 'error' in result:
            rows.append((bench, 'the bench ran', False, str(result['error'])))
            continue
        found = []
        _walk('', result.get('targets') or {}, found)
        for key, value in result.items():
            if (key == 'target' or key.startswith('target_')) and \
                    isinstance(value, dict) and 'met' in value:
                _walk(key, value, found)
            if not isinstance(value, list):
                continue
            for i, row in enumerate(value):
                if isinstance(row, dict) and isinstance(
                        row.get('targets'), dict):
                    _walk(f'{key}[{_row_name(row, i)}]', row['targets'],
                          found, rows=True)
        why = result.get('not_measured')
        rows.extend((bench, name, met,
                     figure or (str(why) if met is None and why else ''))
                    for name, met, figure in found)
    return rows


def render(rows):
    """The table, then one line of counts."""
    mark = {True: 'met', False: 'NOT MET', None: 'not measured'}
    width = max((len(f'{b}: {n}') for b, n, _, _ in rows), default=0)
    lines = ['targets of this run:']
    for bench, name, met, figure in rows:
        label = f'{bench}: {name}'
        lines.append(f'  {label:<{width}}  {mark[met]:<12}'
                     + (f'  ({figure})' if figure else ''))
    counts = {m: sum(1 for r in rows if r[2] is m) for m in mark}
    lines.append(f'{counts[True]} met, {counts[False]} not met, '
                 f'{counts[None]} not measured')
    return '\n'.join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else 'bench/results.json'
    with open(path) as f:
        results = json.load(f)
    print(render(verdicts(results)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
