#!/usr/bin/env python3
"""Where the SE program's time goes on the wire, by source line.

    .venv/bin/python bench/experiments/se_line_profile.py [MODE ...]

MODE is one of veth_rate_bench's (default: floor se): the same rig
(generator -> the XDP program under test on s0 -> sink), run for
DSR_PROFILE_SECONDS (default 4) under ``perf record -a`` (cpu-clock: a VM
has no PMU).  Prints the pipeline's hottest kernel symbols, then the
samples inside the SE program mapped to its C source lines through the
program's jited line info (bpf_prog_info.jited_line_info + its BTF): what
``perf annotate`` would show if perf and bpftool were built with
libbfd / libopcodes, which Debian's are not.

Samples land on the instruction after a stall (skid), so a line is charged
for the load that stalled before it: read the table as "around here", and
compare builds in one run rather than trusting one line's figure.
Needs root and perf (linux-perf).
"""

import bisect
import collections
import ctypes
import os
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import _common as C  # noqa: E402
import veth_rate_bench as V  # noqa: E402

from amphora_agent.dataplane import libbpf  # noqa: E402
from amphora_agent.dataplane import pins  # noqa: E402

SECONDS = float(os.environ.get('DSR_PROFILE_SECONDS', 4))
PROG = 'dsr_se'
TOP = 40


def line_table(prog_id):
    """[(jited address, file, line, source text)] of a loaded program,
    sorted by address."""
    prog = libbpf.Program.from_id(prog_id)
    info = libbpf.BpfProgInfo()
    libbpf._obj_info(prog.fd, info, PROG)
    n, rec = info.nr_line_info, info.line_info_rec_size
    if not n or info.nr_jited_line_info != n:
        raise RuntimeError('%s has no line info (built without -g?)' % PROG)
    lines = ctypes.create_string_buffer(n * rec)
    addrs = (ctypes.c_uint64 * n)()
    full = libbpf.BpfProgInfo()
    full.nr_line_info, full.line_info_rec_size = n, rec
    full.line_info = ctypes.addressof(lines)
    full.nr_jited_line_info, full.jited_line_info_rec_size = n, 8
    full.jited_line_info = ctypes.addressof(addrs)
    libbpf._obj_info(prog.fd, full, PROG)
    lib = ctypes.CDLL('libbpf.so.1')
    lib.btf__load_from_kernel_by_id.restype = ctypes.c_void_p
    lib.btf__name_by_offset.restype = ctypes.c_char_p
    lib.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.btf__free.argtypes = [ctypes.c_void_p]
    btf = lib.btf__load_from_kernel_by_id(info.btf_id)
    if not btf:
        raise RuntimeError('cannot load the BTF of %s' % PROG)
    try:
        table = []
        for i in range(n):
            _, file_off, line_off, line_col = struct.unpack_from(
                '<IIII', lines.raw, i * rec)
            name = (lib.btf__name_by_offset(btf, file_off) or b'?').decode()
            src = (lib.btf__name_by_offset(btf, line_off) or b'').decode()
            table.append((addrs[i], os.path.basename(name), line_col >> 10,
                          src.strip()))
    finally:
        lib.btf__free(btf)
        prog.close()
    return sorted(table)


def prog_id(pin_dir):
    """The rig's SE program (others may run on this host: not by name)."""
    prog = libbpf.Program.from_pin(
        os.path.join(pin_dir, pins.prog_pin_name(PROG)))
    try:
        return prog.id
    finally:
        prog.close()


def profile(rig, mode, data):
    rig.run(mode, duration=0.5)          # warm: conn table, caches
    # Shares of samples, not rates: traffic that starts before perf
    # records, or idle time after it, changes no figure printed.
    perf = subprocess.Popen(
        ['perf', 'record', '-a', '-q', '-o', data, '--', 'sleep',
         str(SECONDS)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    g, d, _ = rig.run(mode, duration=SECONDS)
    if perf.wait() != 0:
        raise RuntimeError('perf record failed (is linux-perf installed?)')
    C.log('\n== %s: %.2f Mpps per core while profiled'
          % (mode, d[V.SINK_TOTAL] / (g['cpu_ns'] / 1e9) / 1e6))


def report(mode, data, table):
    symbols = C.sh('perf', 'report', '-i', data, '--no-children',
                   '--sort', 'sym', '--stdio', '-q')
    busy = [(float(m.group(1)), m.group(2)) for m in re.finditer(
        r'^\s*([\d.]+)%\s+\[k\]\s+(\S+)', symbols, re.M)
        if 'safe_halt' not in m.group(2) and 'idle' not in m.group(2)]
    total = sum(p for p, _ in busy) or 1.0
    C.log('pipeline (non-idle samples), top symbols:')
    for pct, sym in busy[:15]:
        C.log('  %5.1f %%  %s' % (100 * pct / total, sym))
    if mode not in ('se',) + V.MISS_MODES:
        return
    ips = C.sh('perf', 'script', '-i', data, '-F', 'ip,sym')
    addrs = [t[0] for t in table]
    by_line, by_file = collections.Counter(), collections.Counter()
    for m in re.finditer(r'^\s*([0-9a-f]+) bpf_prog_\w+?_%s\b' % PROG,
                         ips, re.M):
        i = bisect.bisect_right(addrs, int(m.group(1), 16)) - 1
        _, name, line, src = table[i] if i >= 0 else (0, '?', 0, '')
        by_line[(name, line, src[:80])] += 1
        by_file[name] += 1
    n = sum(by_line.values()) or 1
    C.log('%s: %d samples, by file: %s' % (PROG, n, ', '.join(
        '%s %.0f %%' % (f, 100 * c / n) for f, c in by_file.most_common())))
    for (name, line, src), c in by_line.most_common(TOP):
        C.log('  %5.1f %%  %s:%d  %s' % (100 * c / n, name, line, src))


def main(argv):
    modes = argv or ['floor', 'se']
    unknown = [m for m in modes if m not in V.MODES]
    if unknown:
        C.log('unknown mode(s) %s; one of %s' % (unknown, ', '.join(V.MODES)))
        return 2
    sb = C.Sandbox()
    with sb, tempfile.TemporaryDirectory(prefix='dsr-profile-') as tmp:
        rig = V.Rig(sb)
        rig.verify()
        table = line_table(prog_id(sb.pin_dir))
        for mode in modes:
            data = os.path.join(tmp, mode + '.data')
            profile(rig, mode, data)
            report(mode, data, table)
        rig.dp.close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
