"""tcpdump on the lab's links while something happens.

    caps = Captures(topo)
    caps.add('client', 'client', 'eth0', 'tcp port 45000')
    caps.add('se1 link', 'router', 'r-se1', 'ip proto 4 or tcp port 45000')
    with caps:                       # every tcpdump listening first
        topo.http_get(VIP, source_port=45000)
        caps.wait(lambda lines: ..., timeout=10)   # until they saw it
    caps.lines['client']             # tcpdump -n -t lines

An XDP program's XDP_TX bypasses the packet taps of its own interface
(tcpdump on the L4 SE sees neither the client's packets nor the tunnelled
copies), so the L4 SE's traffic is captured on the router's side of its
link, which is the same wire.
"""

import re

from tools.lab import netns

_NOT_PACKETS = re.compile(r'^(listening on|tcpdump:|\d+ packets? )')


class Captures:
    def __init__(self, topo):
        self.topo = topo
        self.specs = {}
        self.procs = {}
        self.lines = {}

    def add(self, label, host, ifname, bpf_filter):
        self.specs[label] = (host, ifname, bpf_filter)

    def packets(self, label):
        """The packet lines tcpdump printed so far for ``label``."""
        return [ln for ln in self.procs[label].lines
                if ln and not _NOT_PACKETS.match(ln)]

    def __enter__(self):
        try:
            for label, (host, ifname, bpf_filter) in self.specs.items():
                # -l: line buffered; -t: no timestamps; -n: no names.
                self.procs[label] = self.topo.spawn(
                    host, ['tcpdump', '-n', '-l', '-t', '-i', ifname,
                           bpf_filter], ready=r'^listening on',
                    ready_timeout=15)
        except BaseException:
            self.close()
            raise
        return self

    def wait(self, predicate, timeout, what):
        """Poll until predicate({label: packet lines}) is true; on timeout
        the error shows what each capture saw."""
        try:
            netns.wait_for(lambda: predicate(
                {label: self.packets(label) for label in self.procs}),
                timeout, what, interval=0.05)
        except TimeoutError as exc:
            seen = []
            for label in self.procs:
                lines = self.packets(label)
                seen.append(f'-- {label}: {len(lines)} packets')
                seen.extend(f'   {ln}' for ln in lines[-8:])
            raise TimeoutError(f'{exc}; captured:\n' + '\n'.join(seen)) \
                from None

    def close(self):
        for label, proc in self.procs.items():
            netns.kill_proc(proc)
            self.lines[label] = self.packets(label)

    def __exit__(self, *exc):
        self.close()
