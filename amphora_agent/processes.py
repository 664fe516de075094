"""Processes the agent starts and adopts (ExaBGP, HAProxy), read from /proc
(no psutil): alive, start time -- so a reused PID is never mistaken for
ours --, command line, children, and a bounded terminate."""

import os
import signal
import time


def proc_stat(pid):
    """(state letter, start time in clock ticks) of pid, or None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    rest = data.rsplit(') ', 1)[-1].split()
    # rest[0] is field 3 (state); start time is field 22.
    try:
        return rest[0], int(rest[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid, start_time=None):
    """True if pid runs (not a zombie) and, if given, started at
    ``start_time`` (so a reused PID is not mistaken for ours)."""
    if not pid or pid <= 0:
        return False
    st = proc_stat(pid)
    if st is None or (st[0] in ('Z', 'X') and not _other_threads(pid)):
        return False
    return start_time is None or st[1] == start_time


def _other_threads(pid):
    """Whether threads other than the leader still run: a process whose
    main thread exited shows the leader as a zombie while its other
    threads go on (a multi-threaded HAProxy worker still holding its
    listening sockets)."""
    try:
        return any(int(tid) != pid for tid in os.listdir(f'/proc/{pid}/task'))
    except (OSError, ValueError):
        return False


def process_start_time(pid):
    st = proc_stat(pid)
    return None if st is None else st[1]


def process_cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode(errors='replace')
                    for a in f.read().split(b'\0') if a]
    except OSError:
        return []


def process_children(pid):
    """Direct children of pid (every thread's list)."""
    kids = []
    try:
        tasks = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f'/proc/{pid}/task/{tid}/children') as f:
                kids += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
    return kids


def signal_process(pid, start_time, sig):
    if process_alive(pid, start_time):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def terminate_process(pid, start_time, timeout=5.0):
    """SIGTERM, then SIGKILL after ``timeout``; True once it is gone.
    Only signals while the PID still has ``start_time``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        signal_process(pid, start_time, sig)
        deadline = time.monotonic() + wait
        while process_alive(pid, start_time):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        else:
            return True
    return not process_alive(pid, start_time)
