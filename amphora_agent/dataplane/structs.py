"""ctypes mirrors of bpf/structs.h.  Change both files together."""

import ctypes
import enum
import ipaddress
import socket
import struct

FAMILY_V4 = 4
FAMILY_V6 = 6

PROTOCOLS = {'tcp': socket.IPPROTO_TCP, 'udp': socket.IPPROTO_UDP,
             'sctp': 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


class HashAlgorithm(enum.IntEnum):
    SOURCE_IP_PORT = 0
    SOURCE_IP = 1


class Encap(enum.IntEnum):
    IPIP = 0
    GRE = 1


REAL_F_IN_USE = 1
REAL_F_BACKUP = 2
REAL_F_LIMITED = 4
SE_F_ICMP_ECHO = 1
LISTENER_F_ACL = 1
LISTENER_F_ACL_ALT = 2
CONN_EP_NONE = 0
CONN_EP_CLOSED = 0xffffffff
DEFAULT_EPOCH_SHIFT = 35  # limit.h: a connection-limit epoch is 2**35 ns

# Order of enum se_stat in structs.h.
SE_STATS = (
    'pass', 'steered', 'icmp_echo_reply', 'icmp_too_big_sent',
    'icmp_error_steered', 'drop_malformed', 'drop_ip_options',
    'drop_fragment', 'drop_ipv6_ext', 'drop_unsupported_proto',
    'drop_no_listener', 'drop_no_member', 'drop_no_tunnel_source',
    'drop_no_route', 'drop_too_big', 'drop_icmp', 'drop_internal',
    'drop_not_allowed', 'drop_conn_limit',
)

# Order of enum decap_stat in structs.h.
DECAP_STATS = (
    'ipip', 'ip6ip', 'gre', 'drop_malformed', 'drop_gre_unsupported',
    'drop_internal', 'drop_source',
)

U32x4 = ctypes.c_uint32 * 4


def family_of(address):
    return FAMILY_V4 if address.version == 4 else FAMILY_V6


def pack_addr(address):
    """An ip_address as the four network-order words BPF compares."""
    raw = address.packed.ljust(16, b'\0')
    words = U32x4()
    ctypes.memmove(words, raw, 16)
    return words


def unpack_addr(words, family):
    raw = bytes(words)
    return ipaddress.ip_address(raw[:4] if family == FAMILY_V4 else raw)


class _Struct(ctypes.Structure):
    def __bytes__(self):
        return ctypes.string_at(ctypes.addressof(self), ctypes.sizeof(self))

    @classmethod
    def from_bytes(cls, raw):
        return cls.from_buffer_copy(raw[:ctypes.sizeof(cls)])


class VipKey(_Struct):
    _fields_ = [('addr', U32x4), ('port', ctypes.c_uint16),
                ('proto', ctypes.c_uint8), ('family', ctypes.c_uint8)]


class Listener(_Struct):
    _fields_ = [('id', ctypes.c_uint32), ('hash_alg', ctypes.c_uint8),
                ('encap', ctypes.c_uint8), ('flags', ctypes.c_uint16),
                ('conn_limit', ctypes.c_uint32), ('idle_ms', ctypes.c_uint32),
                ('ring_off', ctypes.c_uint32), ('ring_size', ctypes.c_uint32),
                ('check', ctypes.c_uint32)]


# bpf/listener.h: LISTENER_CHECK_SEED, LISTENER_CHECK_MUL.
LISTENER_CHECK_SEED = 0x4c697374
LISTENER_CHECK_MUL = 0x01000193


def listener_check(key, listener):
    """bpf/listener.h listener_check(): FNV-1a over the 32-bit words (host
    order, as the program loads them) of the VipKey and of every Listener
    field before check."""
    raw = bytes(key) + bytes(listener)[:Listener.check.offset]
    h = LISTENER_CHECK_SEED
    for (word,) in struct.iter_unpack('=I', raw):
        h = ((h ^ word) * LISTENER_CHECK_MUL) & 0xffffffff
    return h


def sealed(key, listener):
    """listener (a Listener for VipKey key) with its check written: the
    program uses no entry without it (bpf/listener.h)."""
    listener.check = listener_check(key, listener)
    return listener


class Acl4Key(_Struct):
    _fields_ = [('prefixlen', ctypes.c_uint32), ('tag', ctypes.c_uint32),
                ('addr', ctypes.c_uint8 * 4)]


class Acl6Key(_Struct):
    _fields_ = [('prefixlen', ctypes.c_uint32), ('tag', ctypes.c_uint32),
                ('addr', ctypes.c_uint8 * 16)]


ACL_TAG_BITS = 32  # the listener tag in front of the address (LPM data)


class ConnSlots(_Struct):
    _fields_ = [('tag', ctypes.c_uint32 * 2), ('count', ctypes.c_int32 * 2)]


class VipAddrKey(_Struct):
    _fields_ = [('addr', U32x4), ('family', ctypes.c_uint8),
                ('pad', ctypes.c_uint8 * 3)]


class VipAddr(_Struct):
    _fields_ = [('listeners', ctypes.c_uint32), ('flags', ctypes.c_uint32)]


class Real(_Struct):
    _fields_ = [('addr', U32x4), ('family', ctypes.c_uint8),
                ('flags', ctypes.c_uint8), ('encap', ctypes.c_uint8),
                ('pad', ctypes.c_uint8), ('gen', ctypes.c_uint32),
                ('nh', ctypes.c_uint32),
                ('listener_id', ctypes.c_uint32),
                ('weight', ctypes.c_uint32), ('idle', ctypes.c_uint32)]


class Nexthop(_Struct):
    _fields_ = [('ifindex', ctypes.c_uint32), ('mtu', ctypes.c_uint16),
                ('smac', ctypes.c_uint8 * 6), ('dmac', ctypes.c_uint8 * 6),
                ('pad', ctypes.c_uint16)]


class FlowKey(_Struct):
    _fields_ = [('src', U32x4), ('dst', U32x4), ('sport', ctypes.c_uint16),
                ('dport', ctypes.c_uint16), ('proto', ctypes.c_uint8),
                ('family', ctypes.c_uint8), ('pad', ctypes.c_uint8 * 2)]


class FlowKey4(_Struct):
    """conn_table_v4's key: an IPv4 flow (FlowKey's fields, one word per
    address)."""
    _fields_ = [('src', ctypes.c_uint32), ('dst', ctypes.c_uint32),
                ('sport', ctypes.c_uint16), ('dport', ctypes.c_uint16),
                ('proto', ctypes.c_uint8), ('family', ctypes.c_uint8),
                ('pad', ctypes.c_uint8 * 2)]


def conn_key(flow):
    """(conn-table map name, key bytes) of a FlowKey: IPv4 flows live in
    conn_table_v4 under a FlowKey4, IPv6 flows in conn_table."""
    if flow.family == FAMILY_V4:
        return 'conn_table_v4', bytes(FlowKey4(
            src=flow.src[0], dst=flow.dst[0], sport=flow.sport,
            dport=flow.dport, proto=flow.proto, family=flow.family))
    return 'conn_table', bytes(flow)


class Conn(_Struct):
    _fields_ = [('real', ctypes.c_uint32), ('gen', ctypes.c_uint32),
                ('hash', ctypes.c_uint32), ('atime', ctypes.c_uint32),
                ('ep', ctypes.c_uint32), ('pad', ctypes.c_uint32)]


CONN_TIME_SHIFT = 23  # conn.atime and real.idle unit: 2**23 ns


def idle_units(ms):
    """An idle timeout in ms as real.idle: whole conn-time units, rounded
    up (so a flow is never dropped before its timeout); 0 stays 0 (none)."""
    return -(-ms * 1_000_000 >> CONN_TIME_SHIFT) if ms else 0


class SeConfig(_Struct):
    _fields_ = [('tunnel_src4', ctypes.c_uint32), ('tunnel_src6', U32x4),
                ('ring_size', ctypes.c_uint32), ('flags', ctypes.c_uint32),
                ('ttl', ctypes.c_uint8), ('epoch_shift', ctypes.c_uint8),
                ('pad', ctypes.c_uint8 * 2), ('flood_rate', ctypes.c_uint32)]


class FloodWindow(_Struct):
    _fields_ = [('start', ctypes.c_uint64), ('inserts', ctypes.c_uint64)]


class ListenerStats(_Struct):
    _fields_ = [('packets', ctypes.c_uint64), ('bytes', ctypes.c_uint64),
                ('new_flows', ctypes.c_uint64), ('conn_hits', ctypes.c_uint64),
                ('conn_misses', ctypes.c_uint64), ('drops', ctypes.c_uint64),
                ('drop_not_allowed', ctypes.c_uint64),
                ('drop_conn_limit', ctypes.c_uint64),
                ('conn_expired', ctypes.c_uint64),
                ('flood_guarded', ctypes.c_uint64)]


class RealStats(_Struct):
    _fields_ = [('packets', ctypes.c_uint64), ('bytes', ctypes.c_uint64),
                ('new_flows', ctypes.c_uint64), ('pad', ctypes.c_uint64)]


class DecapKey(_Struct):
    _fields_ = [('addr', U32x4), ('family', ctypes.c_uint8),
                ('pad', ctypes.c_uint8 * 3)]


def stats_dict(struct):
    return {name: getattr(struct, name) for name, _ in struct._fields_
            if name != 'pad'}
