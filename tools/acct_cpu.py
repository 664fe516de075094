"""CPU by command over a run: the kernel's process accounting (every
process that exited, however short-lived) joined with tools.proc_cpu's
command lines, since accounting keeps only 15 characters of a command's
name ("python" for nearly everything here).

    apt-get install acct
    touch /tmp/run.acct && accton /tmp/run.acct   # accton does not create it
    python3 -m tools.proc_cpu /tmp/procs.json &
    ./.ci/run
    accton off; kill %1
    python3 -m tools.acct_cpu /tmp/run.acct /tmp/procs.json [TOP]

A record is named by its PID's command line as the poller saw it, else by
its parent's ("parent: ..."): a process shorter than the poller's interval
is named by whoever started it.  Paths under /tmp and numbers are folded so
that every lab's instances of a process sum together.  Processes still
running when accounting stops (MariaDB, RabbitMQ) have no record: the
poller's JSON has them.  Threads that exit (Erlang's schedulers) have
records of their own.
"""

import collections
import json
import re
import subprocess
import sys

# dump-acct prints times in the kernel's accounting ticks (AHZ).
AHZ = 100


def records(dump_text):
    """[(command, CPU s, pid, ppid)] of `dump-acct FILE`'s lines."""
    found = []
    for line in dump_text.splitlines():
        fields = [f.strip() for f in line.split('|')]
        if len(fields) < 11:
            continue
        comm, utime, stime = fields[0], float(fields[2]), float(fields[3])
        found.append((comm, (utime + stime) / AHZ, int(fields[9]),
                      int(fields[10])))
    return found


def command_lines(rows):
    """{pid: command line} of tools.proc_cpu's rows (its last non-empty
    one: a zombie's reads as '')."""
    found = {}
    for pid, cmd, _cpu in rows:
        if cmd:
            found[int(pid)] = cmd
    return found


def fold(cmd):
    cmd = re.sub(r'/tmp/\S*', 'TMP', cmd)
    cmd = re.sub(r'/work/ci\d+/', '', cmd)
    return re.sub(r'\d+', 'N', cmd)[:90]


def by_command(recs, cmds):
    """{(accounting name, folded command line): [CPU s, processes]}."""
    sums = collections.defaultdict(lambda: [0.0, 0])
    for comm, cpu, pid, ppid in recs:
        if pid in cmds:
            name = fold(cmds[pid])
        else:
            name = 'parent: ' + fold(cmds.get(ppid, '?'))
        entry = sums[(comm, name)]
        entry[0] += cpu
        entry[1] += 1
    return dict(sums)


def main(argv):
    acct_file, procs_file = argv[:2]
    top = int(argv[2]) if len(argv) > 2 else 40
    dump = subprocess.run(['dump-acct', acct_file], check=True,
                          capture_output=True, text=True).stdout
    recs = records(dump)
    with open(procs_file) as f:
        cmds = command_lines(json.load(f))
    sums = by_command(recs, cmds)
    print(f'{sum(r[1] for r in recs):.0f} CPU-s in {len(recs)} records')
    for (comm, name), (cpu, count) in sorted(
            sums.items(), key=lambda item: -item[1][0])[:top]:
        print(f'{cpu:8.1f} {count:6d}  {comm[:15]:15s} {name}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
