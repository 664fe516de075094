"""Thin typed binding over the system libbpf (``libbpf.so.1``) via ctypes.

This module is a binding and nothing else: it opens and loads BPF ELF
objects, gives access to maps and programs by fd (raw ``bytes`` keys and
values), pins and unpins, attaches XDP and tc programs and runs
``BPF_PROG_TEST_RUN``.  It knows nothing about the project's maps, pin
layout or attach policy.

Errors
    Every failure raises :class:`BpfError` (an :class:`OSError`) carrying
    the errno and a message naming the libbpf operation and the object it
    was applied to.  libbpf 1.x returns ``-errno`` from int-returning
    functions and ``NULL`` + ``errno`` from pointer-returning ones; both are
    handled here.

Logging
    libbpf's own messages are routed to the ``logging`` logger of this
    module (WARN -> WARNING, INFO -> INFO, DEBUG -> DEBUG).  Messages printed
    at WARN level while a failing libbpf call runs (e.g. the verifier log of
    a program that fails to load) are also attached to the raised
    :class:`BpfError` (``.log``, and the tail of it in the message).

Network namespaces
    ``xdp_*`` and ``tc_*`` talk rtnetlink through sockets libbpf opens in the
    calling *thread*; an ifindex is therefore interpreted in the network
    namespace of the calling thread.

File descriptors
    :class:`Map` and :class:`Program` objects obtained from a
    :class:`BpfObject` borrow the object's fds (they become unusable once
    the object is closed); those from ``from_pin``/``from_id`` own their fd
    and close it in :meth:`close` (or when garbage collected).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import threading
import weakref
from typing import Callable, Iterator, NamedTuple, Optional, Self, Sequence

LOG = logging.getLogger(__name__)

LIBBPF_SONAME = "libbpf.so.1"
BPFFS_PATH = "/sys/fs/bpf"

# bpf_map_update_elem() flags (linux/bpf.h).
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4

# enum bpf_map_type (subset; Map.type returns the raw kernel value).
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_DEVMAP = 14
BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21
BPF_MAP_TYPE_DEVMAP_HASH = 25

PERCPU_MAP_TYPES = frozenset({
    BPF_MAP_TYPE_PERCPU_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_LRU_PERCPU_HASH,
    BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
})

# enum bpf_prog_type (subset).
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6

# XDP attach flags (linux/if_link.h).
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
XDP_FLAGS_MODES = XDP_FLAGS_SKB_MODE | XDP_FLAGS_DRV_MODE | XDP_FLAGS_HW_MODE

# IFLA_XDP_ATTACHED values, as reported by xdp_query().attach_mode.
XDP_ATTACHED_NONE = 0
XDP_ATTACHED_DRV = 1
XDP_ATTACHED_SKB = 2
XDP_ATTACHED_HW = 3
XDP_ATTACHED_MULTI = 4

# XDP actions (for prog_test_run results).
XDP_ABORTED = 0
XDP_DROP = 1
XDP_PASS = 2
XDP_TX = 3
XDP_REDIRECT = 4

# enum bpf_tc_attach_point / bpf_tc_flags (bpf/libbpf.h).
BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_CUSTOM = 1 << 2
BPF_TC_F_REPLACE = 1 << 0

# BPF_PROG_TEST_RUN flags (linux/bpf.h).
BPF_F_TEST_RUN_ON_CPU = 1 << 0
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1

BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8

# Kernel-internal errno values that leak to user space.
ENOTSUPP = 524

_LIBBPF_WARN, _LIBBPF_INFO, _LIBBPF_DEBUG = 0, 1, 2
_LOG_LEVELS = {
    _LIBBPF_WARN: logging.WARNING,
    _LIBBPF_INFO: logging.INFO,
    _LIBBPF_DEBUG: logging.DEBUG,
}
# How much of a captured libbpf log goes into an exception message; the
# whole log is always in BpfError.log.
_MAX_LOG_IN_MESSAGE = 16 * 1024


class BpfError(OSError):
    """A libbpf / bpf(2) operation failed.

    ``errno`` is the error number, ``operation`` the libbpf function (or
    binding operation), ``target`` a description of the object it was
    applied to, and ``log`` whatever libbpf printed at WARN level during
    the call (for a failed program load: the verifier log).
    """

    def __init__(self, err: int, message: str, *, operation: str = "",
                 target: str = "", log: str = ""):
        super().__init__(err, message)
        self.operation = operation
        self.target = target
        self.log = log


def _error(err: int, operation: str, target: str = "", detail: str = "",
           log: str = "") -> BpfError:
    msg = operation
    if target:
        msg += " on " + target
    msg += ": " + strerror(err)
    if detail:
        msg += " (" + detail + ")"
    log = log.strip("\n")
    if log:
        shown = log
        if len(shown) > _MAX_LOG_IN_MESSAGE:
            shown = ("[... %d bytes of libbpf log omitted, see .log ...]\n"
                     % (len(shown) - _MAX_LOG_IN_MESSAGE)
                     + shown[-_MAX_LOG_IN_MESSAGE:])
        msg += "\nlibbpf log:\n" + shown
    return BpfError(err, msg, operation=operation, target=target, log=log)


# --------------------------------------------------------------------------
# C structures.  Each mirrors a header exactly (see the layout test).
# --------------------------------------------------------------------------

class BpfMapInfo(ctypes.Structure):
    """struct bpf_map_info (linux/bpf.h)."""
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad0", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info (linux/bpf.h)."""
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * BPF_TAG_SIZE),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32, 1),
        ("_pad0", ctypes.c_uint32, 31),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("_pad1", ctypes.c_uint32),
    ]


class BpfMapBatchOpts(ctypes.Structure):
    """struct bpf_map_batch_opts (bpf/bpf.h)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class BpfTestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (bpf/bpf.h)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class BpfXdpAttachOpts(ctypes.Structure):
    """struct bpf_xdp_attach_opts (bpf/libbpf.h)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("old_prog_fd", ctypes.c_int),
    ]


class BpfXdpQueryOpts(ctypes.Structure):
    """struct bpf_xdp_query_opts (bpf/libbpf.h, libbpf 1.1 layout)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


class BpfTcHook(ctypes.Structure):
    """struct bpf_tc_hook (bpf/libbpf.h)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),  # enum bpf_tc_attach_point
        ("parent", ctypes.c_uint32),
    ]


class BpfTcOpts(ctypes.Structure):
    """struct bpf_tc_opts (bpf/libbpf.h)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


def _opts(struct_type: type, **fields) -> ctypes.Structure:
    """An options struct with ``sz`` set, as libbpf's OPTS macros want."""
    opts = struct_type(**fields)
    opts.sz = ctypes.sizeof(struct_type)
    return opts


# --------------------------------------------------------------------------
# Library loading and libbpf -> logging
# --------------------------------------------------------------------------

_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_PU32 = ctypes.POINTER(ctypes.c_uint32)
_S = ctypes.c_char_p

# int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, va_list)
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_void_p)

_PROTOTYPES: dict[str, tuple[object, list]] = {
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "libbpf_strerror": (_I, [_I, ctypes.c_char_p, ctypes.c_size_t]),
    "libbpf_num_possible_cpus": (_I, []),
    "bpf_object__open_file": (_P, [_S, _P]),
    "bpf_object__load": (_I, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__name": (_S, [_P]),
    "bpf_object__find_map_by_name": (_P, [_P, _S]),
    "bpf_object__find_program_by_name": (_P, [_P, _S]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_map__name": (_S, [_P]),
    "bpf_map__fd": (_I, [_P]),
    "bpf_map__type": (_I, [_P]),
    "bpf_map__key_size": (_U32, [_P]),
    "bpf_map__value_size": (_U32, [_P]),
    "bpf_map__max_entries": (_U32, [_P]),
    "bpf_map__set_max_entries": (_I, [_P, _U32]),
    "bpf_map__set_pin_path": (_I, [_P, _S]),
    "bpf_map__pin_path": (_S, [_P]),
    "bpf_map__is_pinned": (ctypes.c_bool, [_P]),
    "bpf_map__reuse_fd": (_I, [_P, _I]),
    "bpf_program__name": (_S, [_P]),
    "bpf_program__fd": (_I, [_P]),
    "bpf_program__set_autoload": (_I, [_P, ctypes.c_bool]),
    "bpf_obj_pin": (_I, [_I, _S]),
    "bpf_obj_get": (_I, [_S]),
    "bpf_obj_get_info_by_fd": (_I, [_I, _P, _PU32]),
    "bpf_map_get_fd_by_id": (_I, [_U32]),
    "bpf_prog_get_fd_by_id": (_I, [_U32]),
    "bpf_map_lookup_elem": (_I, [_I, _P, _P]),
    "bpf_map_update_elem": (_I, [_I, _P, _P, ctypes.c_uint64]),
    "bpf_map_delete_elem": (_I, [_I, _P]),
    "bpf_map_get_next_key": (_I, [_I, _P, _P]),
    "bpf_map_lookup_batch": (
        _I, [_I, _P, _P, _P, _P, _PU32, ctypes.POINTER(BpfMapBatchOpts)]),
    "bpf_map_update_batch": (
        _I, [_I, _P, _P, _PU32, ctypes.POINTER(BpfMapBatchOpts)]),
    "bpf_map_delete_batch": (
        _I, [_I, _P, _PU32, ctypes.POINTER(BpfMapBatchOpts)]),
    "bpf_prog_test_run_opts": (_I, [_I, ctypes.POINTER(BpfTestRunOpts)]),
    "bpf_xdp_attach": (
        _I, [_I, _I, _U32, ctypes.POINTER(BpfXdpAttachOpts)]),
    "bpf_xdp_detach": (_I, [_I, _U32, ctypes.POINTER(BpfXdpAttachOpts)]),
    "bpf_xdp_query": (_I, [_I, _I, ctypes.POINTER(BpfXdpQueryOpts)]),
    "bpf_tc_hook_create": (_I, [ctypes.POINTER(BpfTcHook)]),
    "bpf_tc_hook_destroy": (_I, [ctypes.POINTER(BpfTcHook)]),
    "bpf_tc_attach": (
        _I, [ctypes.POINTER(BpfTcHook), ctypes.POINTER(BpfTcOpts)]),
    "bpf_tc_detach": (
        _I, [ctypes.POINTER(BpfTcHook), ctypes.POINTER(BpfTcOpts)]),
    "bpf_tc_query": (
        _I, [ctypes.POINTER(BpfTcHook), ctypes.POINTER(BpfTcOpts)]),
}

_lib_lock = threading.Lock()
_libbpf: Optional[ctypes.CDLL] = None
_libc = ctypes.CDLL(None, use_errno=True)
# vsnprintf runs inside libbpf calls (print callback): no errno swapping.
_libc_fmt = ctypes.CDLL(None)
_libc_fmt.vsnprintf.restype = ctypes.c_int
_libc_fmt.vsnprintf.argtypes = [_P, ctypes.c_size_t, _S, _P]
_libc.mount.restype = ctypes.c_int
_libc.mount.argtypes = [_S, _S, _S, ctypes.c_ulong, _P]

# Size of va_list where the callback receives it as a pointer to state we
# can duplicate with a plain memory copy (which is what va_copy does there):
# x86-64 (va_list is an array of one 24-byte struct) and AArch64 (a 32-byte
# struct, passed by reference).  Elsewhere we format once into a fixed
# buffer.
# (os.uname(), not the platform module: that costs dsrctl 25 ms of regexes.)
_VA_LIST_SIZE = {"x86_64": 24, "amd64": 24, "aarch64": 32,
                 "arm64": 32}.get(os.uname().machine.lower(), 0)
_FALLBACK_FORMAT_BUFFER = 64 * 1024

_tls = threading.local()


def _vformat(fmt: bytes, ap: Optional[int]) -> str:
    if not ap:
        return fmt.decode(errors="replace")
    if _VA_LIST_SIZE:
        ap_copy = (ctypes.c_char * _VA_LIST_SIZE)()
        ctypes.memmove(ap_copy, ap, _VA_LIST_SIZE)
        size = _libc_fmt.vsnprintf(None, 0, fmt, ctypes.addressof(ap_copy))
        if size < 0:
            return fmt.decode(errors="replace")
        buf = ctypes.create_string_buffer(size + 1)
        _libc_fmt.vsnprintf(buf, size + 1, fmt, ap)
        return buf.raw[:size].decode(errors="replace")
    buf = ctypes.create_string_buffer(_FALLBACK_FORMAT_BUFFER)
    size = _libc_fmt.vsnprintf(buf, len(buf), fmt, ap)
    if size < 0:
        return fmt.decode(errors="replace")
    return buf.raw[:min(size, len(buf) - 1)].decode(errors="replace")


def _libbpf_print(level: int, fmt: Optional[bytes], ap: Optional[int]) -> int:
    # Called by libbpf from whatever thread is inside libbpf; must never
    # raise (ctypes would just print the traceback and return 0).
    try:
        captures = getattr(_tls, "captures", None)
        pylevel = _LOG_LEVELS.get(level, logging.DEBUG)
        if fmt is None:
            return 0
        if captures:
            if level == _LIBBPF_WARN or LOG.isEnabledFor(pylevel):
                captures[-1].records.append((pylevel, _vformat(fmt, ap)))
        elif LOG.isEnabledFor(pylevel):
            LOG.log(pylevel, "%s", _vformat(fmt, ap).rstrip("\n"))
    except Exception:  # pragma: no cover - defensive
        pass
    return 0


# The callback object must outlive every libbpf call: keep it module-global.
_print_callback = _PRINT_FN(_libbpf_print)


class _Capture:
    """Holds back libbpf messages this thread prints during a call.

    Its WARN messages become part of a BpfError raised for the call; all
    messages are logged when the block ends, at DEBUG level if the call's
    failure was an expected outcome (``quiet``; e.g. EEXIST from
    tc_hook_create, whose kernel message libbpf prints as a warning).
    """

    def __init__(self) -> None:
        self.records: list[tuple[int, str]] = []
        self.quiet = False

    def __enter__(self) -> "_Capture":
        stack = getattr(_tls, "captures", None)
        if stack is None:
            stack = _tls.captures = []
        stack.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _tls.captures.pop()
        for level, text in self.records:
            LOG.log(logging.DEBUG if self.quiet else level, "%s",
                    text.rstrip("\n"))

    @property
    def text(self) -> str:
        return "".join(text for level, text in self.records
                       if level >= logging.WARNING)


def _lib() -> ctypes.CDLL:
    global _libbpf
    lib = _libbpf
    if lib is not None:
        return lib
    with _lib_lock:
        if _libbpf is None:
            try:
                lib = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
            except OSError as exc:
                raise BpfError(errno.ENOENT, "cannot load %s: %s"
                               % (LIBBPF_SONAME, exc),
                               operation="dlopen",
                               target=LIBBPF_SONAME) from exc
            for name, (restype, argtypes) in _PROTOTYPES.items():
                func = getattr(lib, name)
                func.restype = restype
                func.argtypes = argtypes
            lib.libbpf_set_print(_print_callback)
            _libbpf = lib
    return _libbpf


def strerror(err: int) -> str:
    """Error text for a positive errno, including libbpf's own codes."""
    if err == ENOTSUPP:
        return "Operation not supported (ENOTSUPP)"
    if err < 4000:  # LIBBPF_ERRNO__START
        return os.strerror(err)
    buf = ctypes.create_string_buffer(256)
    _lib().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace")


def _check(ret: int, operation: str, target: str = "",
           capture: Optional[_Capture] = None, detail: str = "") -> int:
    if ret < 0:
        raise _error(-ret, operation, target, detail,
                     capture.text if capture else "")
    return ret


def _check_ptr(ptr: Optional[int], operation: str, target: str = "",
               capture: Optional[_Capture] = None) -> int:
    if not ptr:
        err = ctypes.get_errno() or errno.EINVAL
        raise _error(err, operation, target, "",
                     capture.text if capture else "")
    return ptr


def _path(path: "str | os.PathLike[str]") -> bytes:
    return os.fsencode(os.fspath(path))


def _as_bytes(data: "bytes | bytearray | memoryview") -> bytes:
    return data if type(data) is bytes else bytes(data)


def _decode(raw: Optional[bytes]) -> str:
    return raw.decode(errors="replace") if raw else ""


# --------------------------------------------------------------------------
# Global helpers
# --------------------------------------------------------------------------

def num_possible_cpus() -> int:
    """libbpf_num_possible_cpus(): per-CPU map value count."""
    return _check(_lib().libbpf_num_possible_cpus(),
                  "libbpf_num_possible_cpus")


def obj_pin(fd: int, path: "str | os.PathLike[str]") -> None:
    """bpf_obj_pin(): pin a map/program/link fd at a bpffs path."""
    _check(_lib().bpf_obj_pin(fd, _path(path)), "bpf_obj_pin",
           "fd %d at %r" % (fd, os.fspath(path)))


def obj_get(path: "str | os.PathLike[str]") -> int:
    """bpf_obj_get(): open a pinned object; the caller owns the fd."""
    return _check(_lib().bpf_obj_get(_path(path)), "bpf_obj_get",
                  repr(os.fspath(path)))


def _check_fd_kind(fd: int, kind: str, label: str) -> None:
    # bpf_obj_get_info_by_fd() dispatches on the fd's real type and would
    # happily fill a bpf_map_info with program data: check the type first.
    try:
        link = os.readlink("/proc/self/fd/%d" % fd)
    except OSError as exc:
        raise _error(exc.errno or errno.EBADF, "readlink", label) from exc
    expected = "anon_inode:bpf-" + kind
    if link != expected:
        raise _error(errno.EINVAL, "open", label,
                     "fd is %s, not %s" % (link, expected))


def _obj_info(fd: int, info: ctypes.Structure, label: str) -> None:
    length = ctypes.c_uint32(ctypes.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info),
                                         ctypes.byref(length)),
           "bpf_obj_get_info_by_fd", label)


def is_bpffs(path: "str | os.PathLike[str]" = BPFFS_PATH) -> bool:
    """Whether a bpf filesystem is what is visible at ``path``."""
    target = os.path.realpath(path)
    fstype = None
    with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            mountpoint = _unescape_mount_field(fields[1])
            if mountpoint == target:
                fstype = fields[2]  # the last mount on a point is visible
    return fstype == "bpf"


def _unescape_mount_field(field: str) -> str:
    # /proc/mounts octal-escapes space, tab, newline and backslash.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def ensure_bpffs(path: "str | os.PathLike[str]" = BPFFS_PATH) -> bool:
    """Mount a bpf filesystem at ``path`` unless one is there already.

    Returns True if it mounted one, False if it was already mounted.
    """
    if is_bpffs(path):
        return False
    os.makedirs(path, exist_ok=True)
    if _libc.mount(b"bpf", _path(path), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise _error(err, "mount", "bpffs at %r" % os.fspath(path))
    return True


# --------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------

class MapInfo(NamedTuple):
    id: int
    type: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int


class BatchLookup(NamedTuple):
    """One bpf_map_lookup_batch() result: ``count`` packed keys/values."""
    keys: bytes
    values: bytes
    count: int
    out_batch: bytes  # pass as in_batch to continue
    done: bool        # no more elements after these


class _FdHolder:
    """An fd that is either owned (closed by us) or borrowed from a
    BpfObject (valid while that object is open)."""

    _kind = "object"

    def __init__(self, fd: int, owned: bool, owner: Optional["BpfObject"],
                 origin: str):
        self._fd = fd
        self._owner = owner
        self._origin = origin
        self._closed = False
        self._finalizer = (weakref.finalize(self, os.close, fd)
                           if owned else None)

    @property
    def fd(self) -> int:
        if self._closed or (self._owner is not None and self._owner.closed):
            raise _error(errno.EBADF, "fd access (%s closed)" % self._kind,
                         self._origin)
        return self._fd

    @property
    def owned(self) -> bool:
        return self._finalizer is not None

    @property
    def closed(self) -> bool:
        return self._closed or (self._owner is not None and
                                self._owner.closed)

    def close(self) -> None:
        """Close an owned fd; for a borrowed fd just forget it."""
        if not self._closed:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Map(_FdHolder):
    """A BPF map by fd.  Keys and values are raw bytes.

    For per-CPU maps (see :data:`PERCPU_MAP_TYPES`) a value as seen by
    lookup/update is ``num_possible_cpus()`` slots of ``percpu_stride``
    (value_size rounded up to 8) bytes; see :meth:`lookup_percpu`,
    :meth:`split_percpu` and :meth:`join_percpu`.

    ``Map(fd)`` takes ownership of ``fd``; pass ``owned=False`` to borrow.
    """

    _kind = "map"

    def __init__(self, fd: int, *, owned: bool = True,
                 _owner: Optional["BpfObject"] = None,
                 _origin: str = ""):
        super().__init__(fd, owned, _owner, _origin or "map fd %d" % fd)
        try:
            _check_fd_kind(fd, "map", self._origin)
            info = BpfMapInfo()
            _obj_info(fd, info, self._origin)
        except BaseException:
            self.close()
            raise
        self._info = MapInfo(id=info.id, type=info.type,
                             name=_decode(info.name), key_size=info.key_size,
                             value_size=info.value_size,
                             max_entries=info.max_entries,
                             map_flags=info.map_flags)
        self._label = "map %r (id %d)" % (self._info.name, self._info.id)
        self._origin = self._label
        self._ncpus = num_possible_cpus() if self.is_percpu else 1
        stride = (info.value_size + 7) & ~7
        self._vbuf = (stride * self._ncpus if self.is_percpu
                      else info.value_size)

    @classmethod
    def from_pin(cls, path: "str | os.PathLike[str]") -> "Map":
        label = "map pinned at %r" % os.fspath(path)
        fd = _check(_lib().bpf_obj_get(_path(path)), "bpf_obj_get", label)
        return cls(fd, owned=True, _origin=label)

    @classmethod
    def from_id(cls, map_id: int) -> "Map":
        fd = _check(_lib().bpf_map_get_fd_by_id(map_id),
                    "bpf_map_get_fd_by_id", "map id %d" % map_id)
        return cls(fd, owned=True)

    # ---- metadata
    @property
    def info(self) -> MapInfo:
        return self._info

    @property
    def id(self) -> int:
        return self._info.id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def type(self) -> int:
        return self._info.type

    @property
    def key_size(self) -> int:
        return self._info.key_size

    @property
    def value_size(self) -> int:
        return self._info.value_size

    @property
    def max_entries(self) -> int:
        return self._info.max_entries

    @property
    def map_flags(self) -> int:
        return self._info.map_flags

    @property
    def is_percpu(self) -> bool:
        return self._info.type in PERCPU_MAP_TYPES

    @property
    def percpu_stride(self) -> int:
        """Bytes per CPU slot of a per-CPU value (value_size rounded to 8)."""
        return (self._info.value_size + 7) & ~7

    @property
    def value_buffer_size(self) -> int:
        """Size of a value as lookup() returns and update() expects it."""
        return self._vbuf

    def __repr__(self) -> str:
        state = "closed" if self.closed else "fd %d" % self._fd
        return "<Map %r id=%d type=%d key=%d value=%d max=%d %s>" % (
            self.name, self.id, self.type, self.key_size, self.value_size,
            self.max_entries, state)

    # ---- element operations
    def _check_size(self, data: bytes, expected: int, what: str,
                    operation: str) -> None:
        if len(data) != expected:
            raise _error(errno.EINVAL, operation, self._label,
                         "%s is %d bytes, map expects %d"
                         % (what, len(data), expected))

    def lookup(self, key: bytes) -> Optional[bytes]:
        """The value for ``key``, or None if there is none."""
        key = _as_bytes(key)
        self._check_size(key, self.key_size, "key", "bpf_map_lookup_elem")
        buf = ctypes.create_string_buffer(self._vbuf)
        ret = _lib().bpf_map_lookup_elem(self.fd, key, buf)
        if ret == -errno.ENOENT:
            return None
        _check(ret, "bpf_map_lookup_elem", self._label)
        return buf.raw

    def lookup_percpu(self, key: bytes) -> Optional[list[bytes]]:
        """Per-CPU map: one ``value_size`` bytes value per possible CPU."""
        raw = self.lookup(key)
        return None if raw is None else self.split_percpu(raw)

    def split_percpu(self, raw: bytes) -> list[bytes]:
        """Split a per-CPU value buffer into per-CPU values."""
        stride, size = self.percpu_stride, self.value_size
        return [raw[i:i + size] for i in range(0, len(raw), stride)]

    def join_percpu(self, values: Sequence[bytes]) -> bytes:
        """Build a per-CPU value buffer from ``num_possible_cpus()`` values."""
        if len(values) != self._ncpus:
            raise _error(errno.EINVAL, "join_percpu", self._label,
                         "%d values given, %d possible CPUs"
                         % (len(values), self._ncpus))
        pad = self.percpu_stride
        out = bytearray()
        for value in values:
            self._check_size(value, self.value_size, "value", "join_percpu")
            out += value.ljust(pad, b"\0")
        return bytes(out)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        key, value = _as_bytes(key), _as_bytes(value)
        self._check_size(key, self.key_size, "key", "bpf_map_update_elem")
        self._check_size(value, self._vbuf, "value", "bpf_map_update_elem")
        _check(_lib().bpf_map_update_elem(self.fd, key, value, flags),
               "bpf_map_update_elem", self._label)

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was not there."""
        key = _as_bytes(key)
        self._check_size(key, self.key_size, "key", "bpf_map_delete_elem")
        ret = _lib().bpf_map_delete_elem(self.fd, key)
        if ret == -errno.ENOENT:
            return False
        _check(ret, "bpf_map_delete_elem", self._label)
        return True

    def keys(self) -> Iterator[bytes]:
        """All keys, via bpf_map_get_next_key()."""
        lib = _lib()
        fd = self.fd
        cur: Optional[ctypes.Array] = None
        while True:
            nxt = ctypes.create_string_buffer(self.key_size)
            ret = lib.bpf_map_get_next_key(fd, cur, nxt)
            if ret == -errno.ENOENT:
                return
            _check(ret, "bpf_map_get_next_key", self._label)
            yield nxt.raw
            cur = nxt

    def update_batch(self, keys: bytes, values: bytes,
                     count: Optional[int] = None,
                     flags: int = BPF_ANY) -> int:
        """bpf_map_update_batch() of ``count`` packed keys and values.

        ``flags`` become the batch ``elem_flags`` (BPF_ANY, BPF_F_LOCK).
        Returns the number of elements updated (== count on success).
        """
        keys, values = _as_bytes(keys), _as_bytes(values)
        count = self._batch_count(keys, count, "bpf_map_update_batch")
        self._check_size(values, count * self._vbuf, "values",
                         "bpf_map_update_batch")
        n = ctypes.c_uint32(count)
        opts = _opts(BpfMapBatchOpts, elem_flags=flags)
        ret = _lib().bpf_map_update_batch(self.fd, keys, values,
                                          ctypes.byref(n), ctypes.byref(opts))
        _check(ret, "bpf_map_update_batch", self._label,
               detail="%d of %d elements updated" % (n.value, count))
        return n.value

    def delete_batch(self, keys: bytes, count: Optional[int] = None) -> int:
        """bpf_map_delete_batch(); returns the number of elements deleted."""
        keys = _as_bytes(keys)
        count = self._batch_count(keys, count, "bpf_map_delete_batch")
        n = ctypes.c_uint32(count)
        opts = _opts(BpfMapBatchOpts)
        ret = _lib().bpf_map_delete_batch(self.fd, keys, ctypes.byref(n),
                                          ctypes.byref(opts))
        _check(ret, "bpf_map_delete_batch", self._label,
               detail="%d of %d elements deleted" % (n.value, count))
        return n.value

    def _batch_count(self, keys: bytes, count: Optional[int],
                     operation: str) -> int:
        if count is None:
            if self.key_size == 0 or len(keys) % self.key_size:
                raise _error(errno.EINVAL, operation, self._label,
                             "keys length %d is not a multiple of key size %d"
                             % (len(keys), self.key_size))
            count = len(keys) // self.key_size
        self._check_size(keys, count * self.key_size, "keys", operation)
        return count

    def lookup_batch(self, count: int,
                     in_batch: Optional[bytes] = None) -> BatchLookup:
        """One bpf_map_lookup_batch() call for up to ``count`` elements.

        Start with ``in_batch=None`` and continue with the returned
        ``out_batch`` until ``done``.  Raises BpfError(ENOSPC) if a hash
        bucket does not fit into ``count``.
        """
        token_size = max(self.key_size, 8)
        if in_batch is not None and len(in_batch) != token_size:
            raise _error(errno.EINVAL, "bpf_map_lookup_batch", self._label,
                         "in_batch is %d bytes, expected %d"
                         % (len(in_batch), token_size))
        out_batch = ctypes.create_string_buffer(token_size)
        keys = ctypes.create_string_buffer(count * self.key_size or 1)
        values = ctypes.create_string_buffer(count * self._vbuf or 1)
        n = ctypes.c_uint32(count)
        opts = _opts(BpfMapBatchOpts)
        ret = _lib().bpf_map_lookup_batch(
            self.fd, _as_bytes(in_batch) if in_batch is not None else None,
            out_batch, keys, values, ctypes.byref(n), ctypes.byref(opts))
        done = ret == -errno.ENOENT
        if not done:
            _check(ret, "bpf_map_lookup_batch", self._label)
        got = n.value
        return BatchLookup(keys=keys.raw[:got * self.key_size],
                           values=values.raw[:got * self._vbuf],
                           count=got, out_batch=out_batch.raw, done=done)

    def items(self, batch_size: int = 256) -> Iterator[tuple[bytes, bytes]]:
        """All (key, value) pairs.

        Uses bpf_map_lookup_batch() and falls back to get_next_key + lookup
        for map types without batch support.
        """
        ks, vs = self.key_size, self._vbuf
        in_batch: Optional[bytes] = None
        first = True
        while True:
            try:
                batch = self.lookup_batch(batch_size, in_batch)
            except BpfError as exc:
                if (exc.errno == errno.ENOSPC and
                        batch_size < 2 * max(self.max_entries, 1)):
                    batch_size *= 2  # a hash bucket did not fit
                    continue
                if first and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP,
                                           ENOTSUPP):
                    yield from self._items_by_key()
                    return
                raise
            first = False
            for i in range(batch.count):
                yield (batch.keys[i * ks:(i + 1) * ks],
                       batch.values[i * vs:(i + 1) * vs])
            if batch.done:
                return
            in_batch = batch.out_batch

    def _items_by_key(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted meanwhile
                yield key, value

    def pin(self, path: "str | os.PathLike[str]") -> None:
        _check(_lib().bpf_obj_pin(self.fd, _path(path)), "bpf_obj_pin",
               "%s at %r" % (self._label, os.fspath(path)))


# --------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------

class ProgInfo(NamedTuple):
    id: int
    type: int
    name: str
    tag: str
    load_time: int
    run_time_ns: int
    run_cnt: int
    verified_insns: int


class TestRunResult(NamedTuple):
    __test__ = False  # not a pytest test class despite the name

    retval: int
    data_out: bytes
    duration_ns: int
    ctx_out: Optional[bytes]


class Program(_FdHolder):
    """A loaded BPF program by fd.

    ``Program(fd)`` takes ownership of ``fd``; pass ``owned=False`` to
    borrow.
    """

    _kind = "program"

    def __init__(self, fd: int, *, owned: bool = True,
                 _owner: Optional["BpfObject"] = None,
                 _name: Optional[str] = None, _origin: str = ""):
        super().__init__(fd, owned, _owner, _origin or "program fd %d" % fd)
        try:
            _check_fd_kind(fd, "prog", self._origin)
            info = self.info()
        except BaseException:
            self.close()
            raise
        self._id, self._type = info.id, info.type
        # The kernel truncates names to 15 characters; libbpf knows them all.
        self._name = _name or info.name
        self._origin = "program %r (id %d)" % (self._name, self._id)

    @classmethod
    def from_pin(cls, path: "str | os.PathLike[str]") -> "Program":
        label = "program pinned at %r" % os.fspath(path)
        fd = _check(_lib().bpf_obj_get(_path(path)), "bpf_obj_get", label)
        return cls(fd, owned=True, _origin=label)

    @classmethod
    def from_id(cls, prog_id: int) -> "Program":
        fd = _check(_lib().bpf_prog_get_fd_by_id(prog_id),
                    "bpf_prog_get_fd_by_id", "program id %d" % prog_id)
        return cls(fd, owned=True)

    def info(self) -> ProgInfo:
        """Fresh bpf_prog_info (run_time_ns/run_cnt need bpf_stats)."""
        raw = BpfProgInfo()
        _obj_info(self.fd, raw, self._origin)
        return ProgInfo(id=raw.id, type=raw.type, name=_decode(raw.name),
                        tag=bytes(raw.tag).hex(), load_time=raw.load_time,
                        run_time_ns=raw.run_time_ns, run_cnt=raw.run_cnt,
                        verified_insns=raw.verified_insns)

    @property
    def id(self) -> int:
        return self._id

    @property
    def type(self) -> int:
        return self._type

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        state = "closed" if self.closed else "fd %d" % self._fd
        return "<Program %r id=%d type=%d %s>" % (self._name, self._id,
                                                  self._type, state)

    def pin(self, path: "str | os.PathLike[str]") -> None:
        _check(_lib().bpf_obj_pin(self.fd, _path(path)), "bpf_obj_pin",
               "%s at %r" % (self._origin, os.fspath(path)))

    def test_run(self, data_in: bytes = b"", **kwargs) -> TestRunResult:
        """prog_test_run() on this program."""
        return prog_test_run(self.fd, data_in, **kwargs)


def prog_test_run(prog_fd: int, data_in: bytes = b"", *, repeat: int = 1,
                  data_size_out: Optional[int] = None,
                  ctx_in: Optional[bytes] = None,
                  ctx_size_out: Optional[int] = None,
                  flags: int = 0, cpu: int = 0,
                  batch_size: int = 0) -> TestRunResult:
    """bpf_prog_test_run_opts() (BPF_PROG_TEST_RUN).

    ``data_size_out`` defaults to ``len(data_in) + 4096`` (room for
    adjust_head/tail); ``ctx_out`` is only requested when ``ctx_in`` or
    ``ctx_size_out`` is given (default size 4096).  ``data_out``/``ctx_out``
    are trimmed to what the kernel reports.
    """
    data = _as_bytes(data_in)
    if data_size_out is None:
        data_size_out = len(data) + 4096
    if ctx_size_out is None:
        ctx_size_out = 4096 if ctx_in is not None else 0
    data_in_buf = ctypes.create_string_buffer(data, len(data) or 1)
    data_out_buf = ctypes.create_string_buffer(data_size_out or 1)
    opts = _opts(BpfTestRunOpts, repeat=repeat, flags=flags, cpu=cpu,
                 batch_size=batch_size)
    if data:
        opts.data_in = ctypes.addressof(data_in_buf)
        opts.data_size_in = len(data)
    if data_size_out:
        opts.data_out = ctypes.addressof(data_out_buf)
        opts.data_size_out = data_size_out
    if ctx_in is not None:
        ctx = _as_bytes(ctx_in)
        ctx_in_buf = ctypes.create_string_buffer(ctx, len(ctx) or 1)
        opts.ctx_in = ctypes.addressof(ctx_in_buf)
        opts.ctx_size_in = len(ctx)
    ctx_out_buf = None
    if ctx_size_out:
        ctx_out_buf = ctypes.create_string_buffer(ctx_size_out)
        opts.ctx_out = ctypes.addressof(ctx_out_buf)
        opts.ctx_size_out = ctx_size_out
    ret = _lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret < 0:
        detail = ""
        if -ret == errno.ENOSPC:
            detail = ("output needs %d data / %d ctx bytes"
                      % (opts.data_size_out, opts.ctx_size_out))
        raise _error(-ret, "bpf_prog_test_run_opts", "program fd %d"
                     % prog_fd, detail)
    return TestRunResult(
        retval=opts.retval,
        data_out=data_out_buf.raw[:opts.data_size_out] if data_size_out
        else b"",
        duration_ns=opts.duration,
        ctx_out=(ctx_out_buf.raw[:opts.ctx_size_out]
                 if ctx_out_buf is not None else None))


# --------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------

class MapHandle:
    """A map of a :class:`BpfObject` (libbpf's ``struct bpf_map``).

    Configure it before :meth:`BpfObject.load`; use :meth:`map` afterwards.
    When a pin path is set and a compatible map is pinned there, load()
    reuses that map (its contents survive); otherwise load() creates the
    map and pins it there.  An incompatible pinned map fails the load.
    """

    def __init__(self, obj: "BpfObject", ptr: int):
        self._obj = obj
        self._ptr = ptr
        self._name = _decode(_lib().bpf_map__name(ptr))

    def _p(self) -> int:
        self._obj._ptr_or_raise()
        return self._ptr

    @property
    def name(self) -> str:
        return self._name

    @property
    def _label(self) -> str:
        return "map %r of %r" % (self._name, self._obj.path)

    @property
    def type(self) -> int:
        return _lib().bpf_map__type(self._p())

    @property
    def key_size(self) -> int:
        return _lib().bpf_map__key_size(self._p())

    @property
    def value_size(self) -> int:
        return _lib().bpf_map__value_size(self._p())

    @property
    def max_entries(self) -> int:
        return _lib().bpf_map__max_entries(self._p())

    def set_max_entries(self, max_entries: int) -> None:
        _check(_lib().bpf_map__set_max_entries(self._p(), max_entries),
               "bpf_map__set_max_entries", self._label)

    @property
    def pin_path(self) -> Optional[str]:
        raw = _lib().bpf_map__pin_path(self._p())
        return os.fsdecode(raw) if raw else None

    def set_pin_path(self, path: "str | os.PathLike[str] | None") -> None:
        _check(_lib().bpf_map__set_pin_path(
            self._p(), None if path is None else _path(path)),
            "bpf_map__set_pin_path", self._label)

    @property
    def is_pinned(self) -> bool:
        return bool(_lib().bpf_map__is_pinned(self._p()))

    def reuse_fd(self, fd: int) -> None:
        """bpf_map__reuse_fd(): use an existing map (dups ``fd``)."""
        _check(_lib().bpf_map__reuse_fd(self._p(), fd), "bpf_map__reuse_fd",
               self._label)

    @property
    def fd(self) -> int:
        return _check(_lib().bpf_map__fd(self._p()), "bpf_map__fd",
                      self._label,
                      detail="" if self._obj.loaded else "object not loaded")

    def map(self) -> Map:
        """The loaded map; borrows the object's fd."""
        return Map(self.fd, owned=False, _owner=self._obj,
                   _origin=self._label)

    def __repr__(self) -> str:
        return "<MapHandle %r of %r>" % (self._name, self._obj.path)


class BpfObject:
    """A BPF ELF object opened (and later loaded) by libbpf."""

    def __init__(self, ptr: int, path: str):
        self._ptr: Optional[int] = ptr
        self._path = path
        self._loaded = False
        self._finalizer = weakref.finalize(self, _lib().bpf_object__close,
                                           ptr)

    @classmethod
    def open(cls, path: "str | os.PathLike[str]") -> "BpfObject":
        """bpf_object__open_file()."""
        spath = os.fspath(path)
        with _Capture() as cap:
            ptr = _lib().bpf_object__open_file(_path(spath), None)
            _check_ptr(ptr, "bpf_object__open_file", repr(spath), cap)
        return cls(ptr, spath)

    @property
    def path(self) -> str:
        return self._path

    @property
    def name(self) -> str:
        return _decode(_lib().bpf_object__name(self._ptr_or_raise()))

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def _ptr_or_raise(self) -> int:
        if self._ptr is None:
            raise _error(errno.EBADF, "access (BPF object closed)",
                         repr(self._path))
        return self._ptr

    def find_map(self, name: str) -> MapHandle:
        ptr = _lib().bpf_object__find_map_by_name(self._ptr_or_raise(),
                                                  name.encode())
        _check_ptr(ptr, "bpf_object__find_map_by_name",
                   "map %r in %r" % (name, self._path))
        return MapHandle(self, ptr)

    def maps(self) -> list[MapHandle]:
        return [MapHandle(self, p) for p in
                self._iterate(_lib().bpf_object__next_map)]

    def find_program(self, name: str) -> Program:
        """The loaded program ``name``; borrows the object's fd."""
        ptr = _lib().bpf_object__find_program_by_name(self._ptr_or_raise(),
                                                      name.encode())
        _check_ptr(ptr, "bpf_object__find_program_by_name",
                   "program %r in %r" % (name, self._path))
        return self._program(ptr)

    def programs(self) -> list[Program]:
        """All loaded programs (autoload-disabled ones are skipped)."""
        lib = _lib()
        return [self._program(p) for p in
                self._iterate(lib.bpf_object__next_program)
                if lib.bpf_program__fd(p) >= 0]

    def program_names(self) -> list[str]:
        lib = _lib()
        return [_decode(lib.bpf_program__name(p)) for p in
                self._iterate(lib.bpf_object__next_program)]

    def set_autoload(self, program: str, autoload: bool) -> None:
        """bpf_program__set_autoload() (before load)."""
        lib = _lib()
        target = "program %r in %r" % (program, self._path)
        ptr = _check_ptr(lib.bpf_object__find_program_by_name(
            self._ptr_or_raise(), program.encode()),
            "bpf_object__find_program_by_name", target)
        _check(lib.bpf_program__set_autoload(ptr, autoload),
               "bpf_program__set_autoload", target)

    def _program(self, ptr: int) -> Program:
        lib = _lib()
        name = _decode(lib.bpf_program__name(ptr))
        label = "program %r of %r" % (name, self._path)
        fd = _check(lib.bpf_program__fd(ptr), "bpf_program__fd", label,
                    detail="" if self._loaded else "object not loaded")
        return Program(fd, owned=False, _owner=self, _name=name,
                       _origin=label)

    def _iterate(self, next_fn: Callable) -> Iterator[int]:
        ptr = self._ptr_or_raise()
        cur = next_fn(ptr, None)
        while cur:
            yield cur
            cur = next_fn(ptr, cur)

    def load(self) -> None:
        """bpf_object__load(): create/reuse maps, load programs.

        On failure the BpfError message carries libbpf's log (the verifier
        log for a rejected program, the reason for a pinned map mismatch).
        """
        with _Capture() as cap:
            ret = _lib().bpf_object__load(self._ptr_or_raise())
            _check(ret, "bpf_object__load", repr(self._path), cap)
        self._loaded = True

    def close(self) -> None:
        """bpf_object__close(): fds of maps/programs borrowed from this
        object become invalid; pins stay."""
        if self._ptr is not None:
            self._ptr = None
            self._finalizer()

    def __enter__(self) -> "BpfObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("closed" if self.closed else
                 "loaded" if self._loaded else "opened")
        return "<BpfObject %r %s>" % (self._path, state)


# --------------------------------------------------------------------------
# XDP
# --------------------------------------------------------------------------

class XdpQueryResult(NamedTuple):
    prog_id: int       # the attached program unless attach_mode is MULTI
    attach_mode: int   # XDP_ATTACHED_*
    drv_prog_id: int
    skb_prog_id: int
    hw_prog_id: int


def _xdp_attach_opts(old_prog_fd: Optional[int]):
    if old_prog_fd is None:
        return None
    return ctypes.byref(_opts(BpfXdpAttachOpts, old_prog_fd=old_prog_fd))


def xdp_attach(ifindex: int, prog_fd: int, flags: int = 0, *,
               old_prog_fd: Optional[int] = None) -> None:
    """bpf_xdp_attach().

    ``flags``: XDP_FLAGS_SKB_MODE / DRV_MODE / HW_MODE, UPDATE_IF_NOEXIST,
    REPLACE.  With ``old_prog_fd`` libbpf adds XDP_FLAGS_REPLACE and the
    kernel only replaces if that program is the one attached.  The ifindex
    is in the calling thread's network namespace.
    """
    with _Capture() as cap:
        ret = _lib().bpf_xdp_attach(ifindex, prog_fd, flags,
                                    _xdp_attach_opts(old_prog_fd))
        _check(ret, "bpf_xdp_attach",
               "prog fd %d to ifindex %d (flags %#x)"
               % (prog_fd, ifindex, flags), cap)


def xdp_detach(ifindex: int, flags: int = 0, *,
               old_prog_fd: Optional[int] = None) -> None:
    """bpf_xdp_detach().

    The mode flag must match how the program was attached: with ``flags=0``
    the kernel picks driver mode on drivers that support it (veth does), so
    a generic-mode (XDP_FLAGS_SKB_MODE) program stays attached.
    """
    with _Capture() as cap:
        ret = _lib().bpf_xdp_detach(ifindex, flags,
                                    _xdp_attach_opts(old_prog_fd))
        _check(ret, "bpf_xdp_detach", "from ifindex %d (flags %#x)"
               % (ifindex, flags), cap)


def xdp_query(ifindex: int, flags: int = 0) -> XdpQueryResult:
    """bpf_xdp_query(): which XDP program(s) are attached, in which mode.

    libbpf filters a link dump by ifindex: an ifindex that does not exist
    (in the calling thread's namespace) reads as nothing attached.
    """
    opts = _opts(BpfXdpQueryOpts)
    with _Capture() as cap:
        ret = _lib().bpf_xdp_query(ifindex, flags, ctypes.byref(opts))
        _check(ret, "bpf_xdp_query", "ifindex %d" % ifindex, cap)
    return XdpQueryResult(prog_id=opts.prog_id, attach_mode=opts.attach_mode,
                          drv_prog_id=opts.drv_prog_id,
                          skb_prog_id=opts.skb_prog_id,
                          hw_prog_id=opts.hw_prog_id)


# --------------------------------------------------------------------------
# tc (clsact + direct-action cls_bpf filters)
# --------------------------------------------------------------------------

class TcInfo(NamedTuple):
    prog_id: int
    handle: int
    priority: int


def _tc_hook(ifindex: int, attach_point: int, parent: int):
    return _opts(BpfTcHook, ifindex=ifindex, attach_point=attach_point,
                 parent=parent)


def _tc_label(ifindex: int, attach_point: int, handle: int = 0,
              priority: int = 0) -> str:
    point = {BPF_TC_INGRESS: "ingress", BPF_TC_EGRESS: "egress",
             BPF_TC_INGRESS | BPF_TC_EGRESS: "ingress+egress",
             BPF_TC_CUSTOM: "custom"}.get(attach_point, str(attach_point))
    label = "ifindex %d %s" % (ifindex, point)
    if handle or priority:
        label += " handle %d priority %d" % (handle, priority)
    return label


def _tc_validate(operation: str, label: str, ifindex: int,
                 attach_point: int, parent: int, handle: int = 1,
                 priority: int = 1, hooks: Sequence[int] = (
                     BPF_TC_INGRESS, BPF_TC_EGRESS, BPF_TC_CUSTOM)) -> None:
    # libbpf's own argument checks, done here so that an EINVAL coming back
    # can only be the kernel's (see tc_query).
    problem = ""
    if ifindex <= 0:
        problem = "ifindex must be positive"
    elif attach_point not in hooks:
        problem = "unsupported attach point %#x" % attach_point
    elif (attach_point == BPF_TC_CUSTOM) != bool(parent):
        problem = "parent must be set exactly for BPF_TC_CUSTOM"
    elif not handle or not 0 < priority <= 0xffff:
        problem = "handle must be non-zero and priority in 1..65535"
    if problem:
        raise _error(errno.EINVAL, operation, label, problem)


# The kernel (6.18) answers EINVAL, not ENOENT, when there is no clsact
# qdisc ("Parent Qdisc doesn't exists"), no filter chain on the hook yet
# ("Cannot find specified filter chain") or, for a qdisc delete, only the
# ingress queue left behind by an earlier clsact ("Invalid handle").
_TC_ABSENT = (errno.ENOENT, errno.EINVAL)


def tc_hook_create(ifindex: int, attach_point: int = BPF_TC_INGRESS, *,
                   parent: int = 0) -> bool:
    """bpf_tc_hook_create(): add the clsact qdisc (serves both hooks).

    Returns False if it already existed (EEXIST; also the answer when
    another ingress-type qdisc is there), True if created.
    """
    hook = _tc_hook(ifindex, attach_point, parent)
    with _Capture() as cap:
        ret = _lib().bpf_tc_hook_create(ctypes.byref(hook))
        if ret == -errno.EEXIST:
            cap.quiet = True
            return False
        _check(ret, "bpf_tc_hook_create", _tc_label(ifindex, attach_point),
               cap)
    return True


def tc_hook_destroy(ifindex: int,
                    attach_point: int = BPF_TC_INGRESS | BPF_TC_EGRESS, *,
                    parent: int = 0) -> bool:
    """bpf_tc_hook_destroy().

    With INGRESS|EGRESS the clsact qdisc is deleted (with all its filters);
    with just INGRESS or EGRESS only that hook's filters are flushed.
    Returns False if there was nothing to destroy.
    """
    label = _tc_label(ifindex, attach_point)
    _tc_validate("bpf_tc_hook_destroy", label, ifindex, attach_point, parent,
                 hooks=(BPF_TC_INGRESS, BPF_TC_EGRESS,
                        BPF_TC_INGRESS | BPF_TC_EGRESS))
    hook = _tc_hook(ifindex, attach_point, parent)
    with _Capture() as cap:
        ret = _lib().bpf_tc_hook_destroy(ctypes.byref(hook))
        if -ret in _TC_ABSENT:
            cap.quiet = True
            return False
        _check(ret, "bpf_tc_hook_destroy", label, cap)
    return True


def tc_attach(ifindex: int, prog_fd: int,
              attach_point: int = BPF_TC_INGRESS, *, handle: int = 1,
              priority: int = 1, replace: bool = True,
              parent: int = 0) -> TcInfo:
    """bpf_tc_attach(): direct-action cls_bpf filter on a tc hook.

    The hook (clsact qdisc) must exist.  ``handle``/``priority`` 0 let the
    kernel choose; the result says what was used.  Without ``replace`` an
    occupied (handle, priority) fails with EEXIST.
    """
    hook = _tc_hook(ifindex, attach_point, parent)
    opts = _opts(BpfTcOpts, prog_fd=prog_fd, handle=handle,
                 priority=priority,
                 flags=BPF_TC_F_REPLACE if replace else 0)
    with _Capture() as cap:
        ret = _lib().bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        _check(ret, "bpf_tc_attach", "prog fd %d to %s" % (
            prog_fd, _tc_label(ifindex, attach_point, handle, priority)), cap)
    return TcInfo(prog_id=opts.prog_id, handle=opts.handle,
                  priority=opts.priority)


def tc_detach(ifindex: int, attach_point: int = BPF_TC_INGRESS, *,
              handle: int = 1, priority: int = 1, parent: int = 0) -> bool:
    """bpf_tc_detach() of the filter at (handle, priority).

    Returns False if there was no such filter (or no hook).
    """
    label = _tc_label(ifindex, attach_point, handle, priority)
    _tc_validate("bpf_tc_detach", label, ifindex, attach_point, parent,
                 handle, priority)
    hook = _tc_hook(ifindex, attach_point, parent)
    opts = _opts(BpfTcOpts, handle=handle, priority=priority)
    with _Capture() as cap:
        ret = _lib().bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
        if -ret in _TC_ABSENT:
            cap.quiet = True
            return False
        _check(ret, "bpf_tc_detach", label, cap)
    return True


def tc_query(ifindex: int, attach_point: int = BPF_TC_INGRESS, *,
             handle: int = 1, priority: int = 1,
             parent: int = 0) -> Optional[TcInfo]:
    """bpf_tc_query(): the filter at (handle, priority), None if absent
    (also when the hook or the device's clsact qdisc does not exist)."""
    label = _tc_label(ifindex, attach_point, handle, priority)
    _tc_validate("bpf_tc_query", label, ifindex, attach_point, parent,
                 handle, priority)
    hook = _tc_hook(ifindex, attach_point, parent)
    opts = _opts(BpfTcOpts, handle=handle, priority=priority)
    with _Capture() as cap:
        ret = _lib().bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
        if -ret in _TC_ABSENT:
            cap.quiet = True
            return None
        _check(ret, "bpf_tc_query", label, cap)
    return TcInfo(prog_id=opts.prog_id, handle=opts.handle,
                  priority=opts.priority)


__all__ = [
    "BpfError", "BpfObject", "MapHandle", "Map", "MapInfo", "BatchLookup",
    "Program", "ProgInfo", "TestRunResult", "XdpQueryResult", "TcInfo",
    "num_possible_cpus", "obj_pin", "obj_get", "is_bpffs", "ensure_bpffs",
    "prog_test_run", "xdp_attach", "xdp_detach", "xdp_query",
    "tc_hook_create", "tc_hook_destroy", "tc_attach", "tc_detach",
    "tc_query", "strerror",
]
