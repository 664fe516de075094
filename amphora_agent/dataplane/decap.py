"""Member-side decapsulation: the tc (clsact ingress) program and its maps.

For members whose kernel lacks ipip/ip6tnl/gre: the program strips the
outer header of tunnel packets addressed to one of the member's tunnel
addresses and hands the inner packet (for the VIP on lo) to the stack.
"""

import ipaddress
import os
import socket

from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import structs

DEFAULT_PIN_DIR = '/sys/fs/bpf/octavia-dsr/decap'
OBJECT = 'member_tc.o'
PROGRAM = 'dsr_decap'
PROG_PIN = 'prog_' + PROGRAM
MAP_NAMES = ('decap_addrs', 'decap_stats')
TC_HANDLE = 0xd5
TC_PRIORITY = 1


class DecapError(RuntimeError):
    pass


def _key(address):
    address = ipaddress.ip_address(address)
    return bytes(structs.DecapKey(addr=structs.pack_addr(address),
                                  family=structs.family_of(address)))


class Decap:
    def __init__(self, pin_dir, maps):
        self.pin_dir = pin_dir
        self.maps = maps

    @classmethod
    def open(cls, pin_dir=DEFAULT_PIN_DIR, obj_dir=None, reload=False):
        from amphora_agent.dataplane.dataplane import object_dir
        libbpf.ensure_bpffs()
        pinned = all(os.path.exists(os.path.join(pin_dir, n))
                     for n in MAP_NAMES + (PROG_PIN,))
        if reload or not pinned:
            path = os.path.join(obj_dir or object_dir(), OBJECT)
            if not os.path.exists(path):
                raise DecapError(f'BPF object {path} is missing: run "make"')
            os.makedirs(pin_dir, exist_ok=True)
            with libbpf.BpfObject.open(path) as obj:
                for name in MAP_NAMES:
                    obj.find_map(name).set_pin_path(
                        os.path.join(pin_dir, name))
                obj.load()
                prog_pin = os.path.join(pin_dir, PROG_PIN)
                if os.path.exists(prog_pin):
                    os.unlink(prog_pin)
                obj.find_program(PROGRAM).pin(prog_pin)
        return cls(pin_dir, {n: libbpf.Map.from_pin(os.path.join(pin_dir, n))
                             for n in MAP_NAMES})

    def close(self):
        for m in self.maps.values():
            m.close()
        self.maps = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def attach(self, ifname):
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise DecapError(f'interface {ifname!r} does not exist in this '
                             'network namespace')
        with libbpf.Program.from_pin(os.path.join(self.pin_dir,
                                                  PROG_PIN)) as prog:
            libbpf.tc_hook_create(ifindex, libbpf.BPF_TC_INGRESS)
            libbpf.tc_attach(ifindex, prog.fd, libbpf.BPF_TC_INGRESS,
                             handle=TC_HANDLE, priority=TC_PRIORITY,
                             replace=True)

    @staticmethod
    def detach(ifname):
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise DecapError(f'interface {ifname!r} does not exist')
        try:
            libbpf.tc_detach(ifindex, libbpf.BPF_TC_INGRESS,
                             handle=TC_HANDLE, priority=TC_PRIORITY)
        except libbpf.BpfError:
            return False
        return True

    def set_addresses(self, addresses):
        """Make exactly these the tunnel addresses to decapsulate for."""
        wanted = {_key(a) for a in addresses}
        present = {k for k, _ in self.maps['decap_addrs'].items()}
        for key in wanted - present:
            self.maps['decap_addrs'].update(key, (1).to_bytes(4, 'little'))
        for key in present - wanted:
            self.maps['decap_addrs'].delete(key)

    def addresses(self):
        result = []
        for raw, _ in self.maps['decap_addrs'].items():
            k = structs.DecapKey.from_bytes(raw)
            result.append(str(structs.unpack_addr(k.addr, k.family)))
        return sorted(result)

    def stats(self):
        return {name: sum(int.from_bytes(v[:8], 'little') for v in
                          self.maps['decap_stats'].lookup_percpu(
                              index.to_bytes(4, 'little')))
                for index, name in enumerate(structs.DECAP_STATS)}

    def destroy(self):
        self.close()
        for name in MAP_NAMES + (PROG_PIN,):
            path = os.path.join(self.pin_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        try:
            os.rmdir(self.pin_dir)
        except OSError:
            pass
