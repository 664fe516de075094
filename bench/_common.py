"""Shared helpers of the dataplane benchmarks (not a benchmark itself: the
runner, tools/run-benches.py, skips bench/_*.py).

Namespaces are named ``dsrb<4 hex>-<role>``, pins live under
``/sys/fs/bpf/octavia-dsr-bench-<4 hex>``; a :class:`Sandbox` removes all of
them on exit, also when the benchmark fails.  Work that must happen inside a
namespace (netlink, next-hop resolution, BPF_PROG_TEST_RUN with an ingress
device) runs in a forked child that entered the namespace with setns(2) --
not ``ip netns exec``, which remounts /sys and hides /sys/fs/bpf.
"""

import json
import os
import pickle
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from amphora_agent.dataplane import libbpf  # noqa: E402
from pyroute2 import netns as pr_netns  # noqa: E402
from tools.lab.netns import exit_on_sigterm  # noqa: E402,F401 -- benches' API

OBJ_DIR = os.path.join(ROOT, 'amphora_agent', 'dataplane', 'obj')
BENCH_OBJ = os.path.join(OBJ_DIR, 'bench_se_xdp.o')


def log(*args):
    print(*args, flush=True)


def sh(*cmd, check=True, input=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True,
                          text=True, input=input)
    if check and proc.returncode:
        raise RuntimeError('%s failed (%d): %s' % (
            ' '.join(map(str, cmd)), proc.returncode,
            (proc.stderr or proc.stdout).strip()))
    return proc.stdout


def setns(name):
    """Move the calling thread into netns ``name`` (never creating it)."""
    pr_netns.setns(name, flags=0)


def run_in_netns(name, fn, *args, **kwargs):
    """fn(*args, **kwargs) in a forked child inside netns ``name``.

    The child inherits every fd (loaded BPF objects, maps) of the parent.
    Returns fn's (picklable) result; re-raises a child failure as
    RuntimeError carrying the child's traceback.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        code = 0
        try:
            if name:
                setns(name)
            payload = ('ok', fn(*args, **kwargs))
        except BaseException:  # noqa: BLE001 - reported to the parent
            payload = ('error', traceback.format_exc())
            code = 1
        try:
            data = pickle.dumps(payload)
        except Exception:  # noqa: BLE001
            data = pickle.dumps(('error', traceback.format_exc()))
            code = 1
        with os.fdopen(wfd, 'wb') as out:
            out.write(data)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(wfd)
    try:
        with os.fdopen(rfd, 'rb') as inp:
            data = inp.read()
    except BaseException:
        # Interrupted (SIGTERM, ^C): stop our child before cleaning up.
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError('child in netns %s died without a result' % name)
    status, value = pickle.loads(data)
    if status != 'ok':
        raise RuntimeError('in netns %s:\n%s' % (name, value))
    return value


class Sandbox:
    """Namespaces and a pin directory owned by one benchmark run."""

    def __init__(self):
        self.tag = 'dsrb' + secrets.token_hex(2)
        self.pin_dir = '/sys/fs/bpf/octavia-dsr-bench-' + self.tag[4:]
        self.namespaces = []

    def ns(self, role):
        name = '%s-%s' % (self.tag, role)
        sh('ip', 'netns', 'add', name)
        self.namespaces.append(name)
        sh('ip', '-n', name, 'link', 'set', 'lo', 'up')
        return name

    @staticmethod
    def sysctl(ns, *settings):
        sh('nsenter', '--net=/run/netns/' + ns, '--', 'sysctl', '-qw',
           *settings)

    def __enter__(self):
        libbpf.ensure_bpffs()
        os.makedirs(self.pin_dir)
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        # Deleting a namespace destroys its veths and with them every XDP
        # program attached to them; the pins go with the directory.
        for name in reversed(self.namespaces):
            sh('ip', 'netns', 'del', name, check=False)
        self.namespaces = []
        if os.path.isdir(self.pin_dir):
            for entry in os.listdir(self.pin_dir):
                try:
                    os.unlink(os.path.join(self.pin_dir, entry))
                except OSError:
                    pass
            shutil.rmtree(self.pin_dir, ignore_errors=True)


def veth(name, ns, peer, peer_ns, mtu=None):
    sh('ip', 'link', 'add', name, 'netns', ns, 'type', 'veth', 'peer',
       'name', peer, 'netns', peer_ns)
    for n, dev in ((ns, name), (peer_ns, peer)):
        if mtu:
            sh('ip', '-n', n, 'link', 'set', dev, 'mtu', mtu)
        sh('ip', '-n', n, 'link', 'set', dev, 'up')


def link_info(ns, dev):
    info = json.loads(sh('ip', '-n', ns, '-j', 'link', 'show', dev))[0]
    return info['ifindex'], info['address']


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(':'))


def error_summary(exc):
    """One line for the JSON 'error' field: the last line of a (child)
    traceback, else the message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else repr(exc)


def finish(out, t_start, exc=None):
    """End a bench's main(): record the error (if any), total time and
    whether every target was met, print the JSON line; the exit code."""
    rc = 0
    if exc is not None:
        traceback.print_exc()
        out['error'] = error_summary(exc)
        rc = 1
        if isinstance(exc, KeyboardInterrupt):
            rc = 130
        elif isinstance(exc, SystemExit):
            rc = exc.code if isinstance(exc.code, int) else 1
    out['total_s'] = round(time.monotonic() - t_start, 1)
    # A bench without targets (figures only) claims none.
    out['all_targets_met'] = (all(v is True for v in out['targets'].values())
                              if out['targets'] else None)
    print(json.dumps(out), flush=True)
    return rc


def keep_logs(lab):
    """Copy the product's logs to $DSR_BENCH_LOGS (if set): the lab's own
    copy in /tmp/dsr-e2e-logs/<lab> is easy to lose among other labs'."""
    dest = os.environ.get('DSR_BENCH_LOGS')
    if not dest:
        return
    os.makedirs(dest, exist_ok=True)
    for root, _dirs, files in os.walk(lab.agents.root):
        for name in files:
            if name.endswith('.log'):
                shutil.copy(os.path.join(root, name), dest)


def median(values):
    return statistics.median(values)


def pin_cpu(cpu):
    try:
        os.sched_setaffinity(0, {cpu})
        return cpu
    except OSError:
        return None


def percpu_sum(m, key, off=0, size=8):
    return sum(int.from_bytes(v[off:off + size], 'little')
               for v in m.lookup_percpu(key))


def u32(v):
    return int(v).to_bytes(4, 'little')


def xdp_md(ingress_ifindex, data_len):
    """struct xdp_md for BPF_PROG_TEST_RUN ctx_in: data=0, data_end=len."""
    import struct
    return struct.pack('<6I', 0, data_len, 0, ingress_ifindex, 0, 0)
