"""tools/acct_cpu.py: accounting records named by the poller's command
lines, or their parent's."""

from tools import acct_cpu

# dump-acct's format: command|version|utime|stime|etime|uid|gid|mem|io|
# pid|ppid|flags|exit code|tty|start (a line it printed here, folded).
REAL = ('accton          |v3|     0.00|     0.00|     0.00|     0|     0|'
        '  2476.00|     0.00|    7932|    7929|S    |       0|__      |'
        'Sun Dec  6 17:18:11 2026')


def _line(comm, utime, stime, pid, ppid):
    return (f'{comm:16s}|v3|{utime:9.2f}|{stime:9.2f}|   900.00|     0|'
            f'     0|  2476.00|     0.00|{pid:8d}|{ppid:8d}|     |'
            f'       0|__      |Sun Dec  6 17:18:11 2026')


DUMP = '\n'.join([
    _line('python', 50, 10, 101, 1),
    _line('python', 20, 5, 102, 101),
    _line('python', 12, 3, 103, 101),
    _line('python', 100, 0, 204, 1),
    _line('sleep', 0, 0, 305, 999)]) + '\n'

ROWS = [
    ['101', '/work/ci7/.venv/bin/python tools/lab/x.py /tmp/lab-ab12/c', 0.5],
    ['204', '/work/ci7/.venv/bin/python tools/lab/x.py /tmp/lab-cd34/c', 0.9],
    ['204', '', 1.0],       # its zombie: no command line
]


def test_records_in_seconds():
    assert acct_cpu.records(REAL) == [('accton', 0.0, 7932, 7929)]
    recs = acct_cpu.records(DUMP + 'not a record\n')
    assert recs[0] == ('python', 0.6, 101, 1)
    assert [r[2:] for r in recs] == [(101, 1), (102, 101), (103, 101),
                                     (204, 1), (305, 999)]


def test_named_by_the_process_or_its_parent_and_folded():
    sums = acct_cpu.by_command(acct_cpu.records(DUMP),
                               acct_cpu.command_lines(ROWS))
    lab = '.venv/bin/python tools/lab/x.py TMP'
    # Two labs' instances of one command sum together.
    assert sums[('python', lab)] == [1.6, 2]
    # Short-lived children the poller never saw: named by their parent.
    assert sums[('python', 'parent: ' + lab)] == [0.4, 2]
    assert sums[('sleep', 'parent: ?')] == [0.0, 1]
