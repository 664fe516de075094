"""Which sockets take connections or datagrams for an address and port
(sock_diag through pyroute2's DiagSocket, the data `ss` shows)."""

import dataclasses
import ipaddress
import socket

from pyroute2 import DiagSocket

TCP_LISTEN = 10
TCP_CLOSE = 7   # the state of a bound, unconnected UDP socket


@dataclasses.dataclass(frozen=True)
class Listener:
    address: object
    port: int
    protocol: str
    v6only: bool

    def serves(self, vip, port):
        if port != self.port:
            return False
        if self.address == vip:
            return True
        if not self.address.is_unspecified:
            return False
        # [::] without IPV6_V6ONLY also takes IPv4 (as mapped addresses).
        return self.address.version == vip.version or (
            self.address.version == 6 and not self.v6only)


def listeners(protocol):
    proto = socket.IPPROTO_TCP if protocol == 'tcp' else socket.IPPROTO_UDP
    states = 1 << (TCP_LISTEN if protocol == 'tcp' else TCP_CLOSE)
    result = []
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in diag.get_sock_stats(family=family, states=states,
                                           protocol=proto):
                attrs = dict(msg.get('attrs') or [])
                result.append(Listener(
                    ipaddress.ip_address(msg['idiag_src']),
                    msg['idiag_sport'], protocol,
                    bool(attrs.get('INET_DIAG_SKV6ONLY', 1))))
    return result


def missing(vips, ports):
    """[(vip, port)] nobody serves."""
    found = {p: listeners(p) for p in {port.protocol for port in ports}}
    return [(vip, port) for vip in vips for port in ports
            if not any(item.serves(vip, port.number)
                       for item in found[port.protocol])]
