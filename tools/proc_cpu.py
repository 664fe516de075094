"""CPU of every process on the host, from /proc: a snapshot, or a poller
that follows each process over a run and sums the CPU by command line.

    python3 -m tools.proc_cpu /tmp/procs.json &   # poll every 0.5 s
    make -o deps -o build test-e2e
    kill %1       # writes [[pid, command, CPU s], ...] and prints the sums

A process's CPU is the last value seen (utime + stime), so processes
shorter than a poll are partly or wholly missed; a process that started
before the poller counts from its own start, not the poller's.
"""

import collections
import json
import os
import signal
import sys
import time

TICK = os.sysconf('SC_CLK_TCK')


def cpu_by_pid():
    """{pid: (command, CPU seconds so far, start time in clock ticks)} of
    every process (pid and start time name a process: PIDs are reused)."""
    found = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/stat') as f:
                stat = f.read()
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(
                    errors='replace').strip()
        except OSError:
            continue
        # Fields after the command's ')': state is field 3, utime 14,
        # stime 15, starttime 22 (proc(5)).
        fields = stat[stat.rfind(')') + 2:].split()
        found[pid] = (cmd[:100], (int(fields[11]) + int(fields[12])) / TICK,
                      int(fields[19]))
    return found


def main(out_path, interval=0.5):
    stopped = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.append(True))
    # (pid, start time) -> [command, CPU s] as last seen.  One process
    # may show several command lines: it retitles itself (setproctitle:
    # cotyledon's workers, pytest-xdist's per test file) and reads as ''
    # once it is a zombie; it is counted once, under its last title.
    last = {}
    while not stopped:
        for pid, (cmd, cpu, start) in cpu_by_pid().items():
            seen = last.setdefault((pid, start), [cmd, cpu])
            if cmd:
                seen[0] = cmd
            seen[1] = cpu
        time.sleep(interval)
    rows = [[pid, cmd, cpu] for (pid, _), (cmd, cpu) in last.items()]
    with open(out_path, 'w') as f:
        json.dump(rows, f)
    by_cmd = collections.Counter()
    for _, cmd, cpu in rows:
        by_cmd[cmd[:60]] += cpu
    for cmd, cpu in by_cmd.most_common(25):
        print(f'{cpu:8.1f} s  {cmd}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
