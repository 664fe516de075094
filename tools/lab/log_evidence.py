"""What a failed tempest gate or e2e test prints of the product's own logs.

CI keeps only what the run printed, not the lab's log folder, so a failed
gate prints the warnings and errors of the controller, the SEs and the
status relay beside tempest's summary (tools/tempest/gate.py), and a failed
e2e test beside its traceback (tests/functional/e2e/conftest.py):
"generation N of g-l7 not applied by every SE within 60 s" or an SE's
rejection says at once whether the product or the test went wrong.
Repeated messages are counted, not repeated (the text after the level
without the request context, numbers and hexadecimal ids aside; the first
one is shown), and of a message logged over several lines (a traceback)
only its first line is kept."""

import collections
import os
import re

# The product's logs, as the tempest gate's log folder names them
# (tools/tempest/gate.py, keep_logs: os_*, l7_*) and as an e2e lab's
# folder does (m<n>: its L7 SEs): controllers, L4 and L7 SEs, the status
# relay, octavia's driver agent (the provider's status updates pass
# through it).
PRODUCT_LOGS = re.compile(r'^(ctl\d+|se\d+|l7_[^.]+|m\d+|'
                          r'(os_)?status-relay|'
                          r'(os_)?octavia-driver-agent)\.log$')
# oslo.log: "<date> <time> <pid> <LEVEL> <logger> [<context>] <message>"
_NUMBER = re.compile(r'[0-9a-fA-F-]*\d[0-9a-fA-F-]*')
_LINE = re.compile(r'^(\S+ \S+) (\d+) (WARNING|ERROR|CRITICAL) (\S+) '
                   r'(?:\[[^\]]*\] )?(.*)$')


def product_problems(logs, per_file=20, width=300):
    """[(file name, [(first time, level, logger, message, count)])] of the
    product logs in folder ``logs`` that hold warnings or errors, in file
    name order; each file's distinct messages in the order they first
    appeared, at most ``per_file`` of them (errors first kept when there
    are more), each cut to ``width`` characters."""
    try:
        names = sorted(n for n in os.listdir(logs) if PRODUCT_LOGS.match(n))
    except OSError:
        return []
    return _problems([(n, os.path.join(logs, n)) for n in names],
                     per_file, width)


def problems_under(root, per_file=20, width=300):
    """product_problems() of the product logs anywhere below root (a
    lab's folder), named by their path below it."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if PRODUCT_LOGS.match(name):
                path = os.path.join(folder, name)
                found.append((os.path.relpath(path, root), path))
    return _problems(sorted(found), per_file, width)


def _problems(files, per_file, width):
    found = []
    for name, path in files:
        seen = collections.OrderedDict()
        record = None
        with open(path, errors='replace') as f:
            for line in f:
                m = _LINE.match(line.rstrip('\n'))
                if not m:
                    continue
                when, pid, level, logger, message = m.groups()
                # oslo.log writes each line of a multi-line message (a
                # traceback) as a record of the same time, process and
                # logger: the first line says what happened.
                if (when, pid, level, logger) == record:
                    continue
                record = (when, pid, level, logger)
                # Numbers and hexadecimal ids (generations, ports, message
                # ids) do not make a message new.
                key = (level, logger, _NUMBER.sub('#', message[:width]))
                if key in seen:
                    seen[key][4] += 1
                else:
                    seen[key] = [when, level, logger, message[:width], 1]
        if not seen:
            continue
        rows = list(seen.values())
        if len(rows) > per_file:
            order = {id(r): i for i, r in enumerate(rows)}
            kept = ([r for r in rows if r[1] != 'WARNING'] +
                    [r for r in rows if r[1] == 'WARNING'])[:per_file]
            rows = sorted(kept, key=lambda r: order[id(r)])
        found.append((name, [tuple(r) for r in rows]))
    return found


def render(found):
    """The text the gate prints for product_problems()'s answer."""
    out = []
    for name, rows in found:
        out.append(f'--- {name}: warnings and errors (first seen, count)')
        for when, level, logger, message, count in rows:
            times = f' (x{count})' if count > 1 else ''
            out.append(f'{when} {level} {logger}: {message}{times}')
    return '\n'.join(out)
