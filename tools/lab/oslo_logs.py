"""Lines of the product's oslo.log files, with their times: oslo.log
stamps each line with local time to the millisecond
('2026-12-06 02:48:14.414 ...'), so a line's time compares with
time.time().  Used by the tests and benchmarks that split a change into
what each process logged."""

import datetime
import re

STAMP_FORMAT = '%Y-%m-%d %H:%M:%S.%f'


def stamp(line):
    """The line's time (epoch seconds), or None if it has none."""
    try:
        return datetime.datetime.strptime(line[:23], STAMP_FORMAT).timestamp()
    except ValueError:
        return None


def events(path, pattern, since=0.0):
    """(epoch seconds, match) of path's lines logged at since or later
    that pattern (a regular expression, compiled or not) finds; [] when
    the file is missing."""
    rx = re.compile(pattern)
    found = []
    try:
        with open(path, errors='replace') as f:
            for line in f:
                m = rx.search(line)
                if m is None:
                    continue
                at = stamp(line)
                if at is not None and at >= since:
                    found.append((at, m))
    except FileNotFoundError:
        pass
    return found
