"""Summarise a tempest run: counts, skip reasons aggregated, failures.

Run with the tempest venv's interpreter (it needs python-subunit and
testtools) on a subunit v2 stream, e.g. `stestr last --subunit | python
summary.py --json out.json`.  Prints the failures with the end of their
tracebacks, the skip reasons with how many tests each skipped, and as its
last line "N passed, N failed, N skipped".
"""

import argparse
import collections
import json
import re
import sys

import subunit
import testtools


def collect(stream):
    results = {}

    def on_test(test):
        tid = re.sub(r'\[.*\]$', '', test['id'])
        details = test.get('details') or {}
        reason = details.get('reason')
        text = ''
        for key in ('traceback', 'reason'):
            if key in details:
                text = details[key].as_text()
                break
        results[tid] = {'status': test['status'],
                        'reason': reason.as_text().strip() if reason else '',
                        'text': text}

    case = subunit.ByteStreamToStreamResult(stream, non_subunit_name='stdout')
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        case.run(result)
    finally:
        result.stopTestRun()
    # setUpClass/tearDownClass records are not tests; a failing one is a
    # failure of its class and counted as such.
    return results


def summarise(results):
    counts = collections.Counter()
    skips = collections.Counter()
    failures = {}
    for tid, r in sorted(results.items()):
        status = r['status']
        if status in ('success', 'xfail'):
            counts['passed'] += 1
        elif status == 'skip':
            counts['skipped'] += 1
            # Aggregate: the provider's refusal text without object ids.
            reason = re.sub(r'[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', r['reason'])
            skips[reason[:300]] += 1
        elif status in ('fail', 'uxsuccess'):
            counts['failed'] += 1
            failures[tid] = r['text']
        else:
            counts[status] += 1
    return counts, skips, failures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--json', help='also write the summary as JSON here')
    args = p.parse_args(argv)
    results = collect(sys.stdin.buffer)
    counts, skips, failures = summarise(results)
    for tid, text in failures.items():
        print(f'FAILED {tid}')
        for line in text.strip().splitlines()[-12:]:
            print(f'    {line}')
    print('\nSkip reasons (tests skipped):')
    for reason, n in skips.most_common():
        print(f'  {n:4d}  {reason}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'counts': counts, 'skips': skips,
                       'failures': failures,
                       'tests': {t: r['status'] for t, r in results.items()}},
                      f, indent=1, sort_keys=True)
    print(f"\n{counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped")
    return 1 if counts['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
