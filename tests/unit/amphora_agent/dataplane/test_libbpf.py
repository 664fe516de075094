"""Tests for amphora_agent.dataplane.libbpf (the ctypes libbpf binding).

These really load BPF: they need root, clang and a BPF-capable kernel.
Network tests run in a throw-away network namespace; pins live under
/sys/fs/bpf/octavia-dsr-test-<random>/.  Everything is removed in fixture
teardown, also when a test fails.
"""

import ctypes
import errno
import logging
import os
import pathlib
import platform
import secrets
import shutil
import struct
import subprocess
import threading

import pytest

from amphora_agent.dataplane import libbpf

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
    pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang"),
]

HERE = pathlib.Path(__file__).resolve().parent
TEST_PROG_SRC = HERE / "bpf" / "libbpf_test_prog.c"

# An XDP program the verifier rejects (packet access without bounds check).
BAD_PROG_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int lbt_xdp_bad(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data;

    return data[20];
}

char _license[] SEC("license") = "GPL";
"""

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
HASH_VALUE = struct.Struct("<IIQ")  # struct lbt_hash_value


def _unique(prefix="lbt"):
    return prefix + secrets.token_hex(4)  # 11 chars: fits IFNAMSIZ


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail("%s failed (%d):\n%s%s" % (" ".join(cmd), proc.returncode,
                                               proc.stdout, proc.stderr))
    return proc.stdout


def _compile_bpf(src, out):
    _run(["clang", "-O2", "-g", "-target", "bpf",
          "-I/usr/include/%s-linux-gnu" % platform.machine(),
          "-c", str(src), "-o", str(out)])
    return str(out)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def bpffs():
    libbpf.ensure_bpffs()
    assert libbpf.is_bpffs(libbpf.BPFFS_PATH)
    return libbpf.BPFFS_PATH


@pytest.fixture(scope="session")
def prog_obj_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("libbpf_bpf") / "libbpf_test_prog.o"
    return _compile_bpf(TEST_PROG_SRC, out)


@pytest.fixture(scope="session")
def bad_obj_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("libbpf_bad")
    src = tmp / "bad.c"
    src.write_text(BAD_PROG_SRC)
    return _compile_bpf(src, tmp / "bad.o")


@pytest.fixture
def obj(prog_obj_path):
    with libbpf.BpfObject.open(prog_obj_path) as bpf_obj:
        bpf_obj.load()
        yield bpf_obj


@pytest.fixture
def pin_dir(bpffs):
    path = os.path.join(bpffs, "octavia-dsr-test-" + secrets.token_hex(4))
    os.mkdir(path)
    try:
        yield path
    finally:
        shutil.rmtree(path)


class _NetnsVeth:
    def __init__(self, name, ifname, ifindex, peer_ifindex):
        self.name = name
        self.ifname = ifname
        self.ifindex = ifindex
        self.peer_ifindex = peer_ifindex

    def run(self, func, *args, **kwargs):
        """Run func in a thread that has joined this network namespace.

        Network namespaces are per thread; libbpf's netlink sockets and the
        ifindex are resolved in the calling thread's namespace.  The thread
        ends afterwards, so the test's own thread never changes namespace.
        """
        from pyroute2 import netns
        outcome = {}

        def target():
            try:
                netns.setns(self.name, flags=0)
                outcome["result"] = func(*args, **kwargs)
            except BaseException as exc:  # re-raised in the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="lbt-netns")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]


@pytest.fixture
def veth_netns():
    pyroute2 = pytest.importorskip("pyroute2")
    from pyroute2 import netns
    name = _unique()
    ifname, peer = _unique(), _unique()
    netns.create(name)
    try:
        with pyroute2.IPRoute(netns=name) as ipr:
            ipr.link("add", ifname=ifname, kind="veth", peer=peer)
            (ifindex,) = ipr.link_lookup(ifname=ifname)
            (peer_ifindex,) = ipr.link_lookup(ifname=peer)
            ipr.link("set", index=ifindex, state="up")
            ipr.link("set", index=peer_ifindex, state="up")
        yield _NetnsVeth(name, ifname, ifindex, peer_ifindex)
    finally:
        # Destroying the namespace destroys the veth pair and with it
        # anything still attached to it.
        netns.remove(name)


def test_ensure_bpffs_mounts_once(prog_obj_path, tmp_path):
    target = tmp_path / "bpffs"
    assert not libbpf.is_bpffs(str(tmp_path))
    assert libbpf.ensure_bpffs(str(target)) is True
    try:
        assert libbpf.is_bpffs(str(target))
        assert libbpf.ensure_bpffs(str(target)) is False
        with libbpf.BpfObject.open(prog_obj_path) as bpf_obj:
            bpf_obj.load()
            bpf_obj.find_map("lbt_array").map().pin(target / "m")
        with libbpf.Map.from_pin(target / "m") as pinned:
            assert pinned.name == "lbt_array"
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.umount2(bytes(target), 2) == 0, os.strerror(  # DETACH
            ctypes.get_errno())
    assert not libbpf.is_bpffs(str(target))


# --------------------------------------------------------------------------
# structure layouts
# --------------------------------------------------------------------------

STRUCTS = {
    libbpf.BpfMapInfo: "bpf_map_info",
    libbpf.BpfProgInfo: "bpf_prog_info",
    libbpf.BpfMapBatchOpts: "bpf_map_batch_opts",
    libbpf.BpfTestRunOpts: "bpf_test_run_opts",
    libbpf.BpfXdpAttachOpts: "bpf_xdp_attach_opts",
    libbpf.BpfXdpQueryOpts: "bpf_xdp_query_opts",
    libbpf.BpfTcHook: "bpf_tc_hook",
    libbpf.BpfTcOpts: "bpf_tc_opts",
}


def test_struct_layouts_match_headers(tmp_path):
    """Every ctypes struct field sits where the C headers put it."""
    lines = ["#include <stddef.h>", "#include <stdio.h>",
             "#include <linux/bpf.h>", "#include <bpf/bpf.h>",
             "#include <bpf/libbpf.h>", "int main(void) {"]
    expected = {}
    for cls, cname in STRUCTS.items():
        lines.append('printf("%s sizeof %%zu\\n", sizeof(struct %s));'
                     % (cname, cname))
        for field in cls._fields_:
            fname = field[0]
            if fname.startswith("_") or len(field) == 3:  # pads, bitfields
                continue
            lines.append('printf("%s %s %%zu\\n", offsetof(struct %s, %s));'
                         % (cname, fname, cname, fname))
            expected["%s %s" % (cname, fname)] = getattr(cls, fname).offset
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    _run(["clang", "-o", str(exe), str(src)])
    actual, c_sizes = {}, {}
    for line in _run([str(exe)]).splitlines():
        key, value = line.rsplit(" ", 1)
        if key.endswith(" sizeof"):
            c_sizes[key.split()[0]] = int(value)
        else:
            actual[key] = int(value)
    assert actual == expected
    for cls, cname in STRUCTS.items():
        # A newer header may append fields (libbpf/kernel accept the
        # smaller size we announce), never shrink.
        assert ctypes.sizeof(cls) <= c_sizes[cname], cname
    # With the headers this was written against, sizes match exactly.
    if (libbpf.BpfXdpQueryOpts.attach_mode.offset + 8
            >= c_sizes["bpf_xdp_query_opts"]):
        for cls, cname in STRUCTS.items():
            assert ctypes.sizeof(cls) == c_sizes[cname], cname


# --------------------------------------------------------------------------
# objects, maps, programs
# --------------------------------------------------------------------------

def test_open_load_and_metadata(prog_obj_path):
    with libbpf.BpfObject.open(prog_obj_path) as bpf_obj:
        assert not bpf_obj.loaded
        assert sorted(m.name for m in bpf_obj.maps()) == [
            "lbt_array", "lbt_hash", "lbt_percpu"]
        assert sorted(bpf_obj.program_names()) == [
            "lbt_tc_mark", "lbt_xdp_flip", "lbt_xdp_pass"]
        handle = bpf_obj.find_map("lbt_hash")
        assert (handle.type, handle.key_size, handle.value_size,
                handle.max_entries) == (libbpf.BPF_MAP_TYPE_HASH, 4, 16, 64)
        handle.set_max_entries(32)
        with pytest.raises(libbpf.BpfError, match="not loaded"):
            bpf_obj.find_program("lbt_xdp_flip")

        bpf_obj.load()
        assert bpf_obj.loaded

        hmap = handle.map()
        assert (hmap.type, hmap.key_size, hmap.value_size,
                hmap.max_entries) == (libbpf.BPF_MAP_TYPE_HASH, 4, 16, 32)
        assert hmap.name == "lbt_hash" and hmap.id > 0
        assert not hmap.is_percpu and hmap.value_buffer_size == 16

        amap = bpf_obj.find_map("lbt_array").map()
        assert (amap.type, amap.key_size, amap.value_size,
                amap.max_entries) == (libbpf.BPF_MAP_TYPE_ARRAY, 4, 8, 8)

        xdp = bpf_obj.find_program("lbt_xdp_flip")
        tc = bpf_obj.find_program("lbt_tc_mark")
        assert xdp.type == libbpf.BPF_PROG_TYPE_XDP
        assert tc.type == libbpf.BPF_PROG_TYPE_SCHED_CLS
        assert xdp.name == "lbt_xdp_flip" and xdp.fd >= 0
        info = xdp.info()
        assert info.id == xdp.id and len(info.tag) == 16
        assert info.verified_insns > 0
        assert sorted(p.name for p in bpf_obj.programs()) == [
            "lbt_tc_mark", "lbt_xdp_flip", "lbt_xdp_pass"]

        with libbpf.Program.from_id(xdp.id) as again:
            assert again.owned and again.id == xdp.id
            assert again.fd != xdp.fd
            assert again.info().tag == info.tag
        with libbpf.Map.from_id(hmap.id) as again:
            assert again.name == "lbt_hash" and again.max_entries == 32

    # Borrowed fds die with the object.
    assert bpf_obj.closed and hmap.closed
    with pytest.raises(libbpf.BpfError) as exc_info:
        hmap.lookup(U32.pack(0))
    assert exc_info.value.errno == errno.EBADF
    with pytest.raises(libbpf.BpfError):
        bpf_obj.find_map("lbt_hash")


def test_array_map_crud(obj):
    amap = obj.find_map("lbt_array").map()
    assert amap.lookup(U32.pack(3)) == U64.pack(0)  # arrays are preallocated
    amap.update(U32.pack(3), U64.pack(0xdeadbeef))
    assert amap.lookup(U32.pack(3)) == U64.pack(0xdeadbeef)
    assert amap.lookup(U32.pack(8)) is None  # out of range: ENOENT
    with pytest.raises(libbpf.BpfError) as exc_info:
        amap.update(U32.pack(8), U64.pack(1))
    assert exc_info.value.errno == errno.E2BIG
    with pytest.raises(libbpf.BpfError) as exc_info:
        amap.update(U32.pack(3), U64.pack(1), libbpf.BPF_NOEXIST)
    assert exc_info.value.errno == errno.EEXIST
    with pytest.raises(libbpf.BpfError) as exc_info:
        amap.delete(U32.pack(3))  # array elements cannot be deleted
    assert exc_info.value.errno == errno.EINVAL
    assert "lbt_array" in str(exc_info.value)


def test_hash_map_crud(obj):
    hmap = obj.find_map("lbt_hash").map()
    key, value = U32.pack(7), HASH_VALUE.pack(1, 2, 3)
    assert hmap.lookup(key) is None
    with pytest.raises(libbpf.BpfError) as exc_info:
        hmap.update(key, value, libbpf.BPF_EXIST)
    assert exc_info.value.errno == errno.ENOENT
    hmap.update(key, value, libbpf.BPF_NOEXIST)
    assert hmap.lookup(key) == value
    with pytest.raises(libbpf.BpfError) as exc_info:
        hmap.update(key, value, libbpf.BPF_NOEXIST)
    assert exc_info.value.errno == errno.EEXIST
    hmap.update(bytearray(key), HASH_VALUE.pack(4, 5, 6), libbpf.BPF_EXIST)
    assert HASH_VALUE.unpack(hmap.lookup(key)) == (4, 5, 6)
    assert list(hmap.keys()) == [key]
    assert hmap.delete(key) is True
    assert hmap.delete(key) is False
    assert hmap.lookup(key) is None
    assert list(hmap.keys()) == [] and list(hmap.items()) == []


def test_batch_update_and_iteration(obj):
    hmap = obj.find_map("lbt_hash").map()
    entries = {U32.pack(i * 7 + 1): HASH_VALUE.pack(i, ~i & 0xffffffff, i * i)
               for i in range(50)}
    assert hmap.update_batch(b"".join(entries), b"".join(entries.values())) \
        == 50
    assert {k: hmap.lookup(k) for k in entries} == entries
    # Small batches force several lookup_batch rounds (and bucket growth).
    for batch_size in (1, 7, 1000):
        assert dict(hmap.items(batch_size=batch_size)) == entries
    assert set(hmap.keys()) == set(entries)

    # The raw batch call.
    seen, in_batch = {}, None
    while True:
        batch = hmap.lookup_batch(16, in_batch)
        for i in range(batch.count):
            key = batch.keys[i * 4:(i + 1) * 4]
            seen[key] = batch.values[i * 16:(i + 1) * 16]
        if batch.done:
            break
        in_batch = batch.out_batch
    assert seen == entries

    doomed = list(entries)[:20]
    assert hmap.delete_batch(b"".join(doomed)) == 20
    assert set(hmap.keys()) == set(entries) - set(doomed)

    with pytest.raises(libbpf.BpfError, match="multiple of key size"):
        hmap.update_batch(b"123", HASH_VALUE.pack(0, 0, 0))
    with pytest.raises(libbpf.BpfError, match="values is 8 bytes"):
        hmap.update_batch(U32.pack(1) * 2, b"x" * 8)

    amap = obj.find_map("lbt_array").map()
    amap.update_batch(b"".join(U32.pack(i) for i in range(8)),
                      b"".join(U64.pack(100 + i) for i in range(8)))
    assert list(amap.items(batch_size=3)) == [
        (U32.pack(i), U64.pack(100 + i)) for i in range(8)]
    assert list(amap._items_by_key()) == list(amap.items())


def test_percpu_map_shape(obj):
    ncpus = libbpf.num_possible_cpus()
    assert ncpus >= 1
    pmap = obj.find_map("lbt_percpu").map()
    assert pmap.is_percpu and pmap.value_size == 4
    assert pmap.percpu_stride == 8
    assert pmap.value_buffer_size == 8 * ncpus

    raw = pmap.lookup(U32.pack(1))
    assert raw == bytes(8 * ncpus)
    assert pmap.lookup_percpu(U32.pack(1)) == [bytes(4)] * ncpus

    values = [U32.pack(1000 + cpu) for cpu in range(ncpus)]
    pmap.update(U32.pack(1), pmap.join_percpu(values))
    assert pmap.lookup_percpu(U32.pack(1)) == values
    items = dict(pmap.items())
    assert len(items) == 4
    assert pmap.split_percpu(items[U32.pack(1)]) == values
    with pytest.raises(libbpf.BpfError, match="value is 4 bytes"):
        pmap.update(U32.pack(1), U32.pack(1))

    # The XDP program counts its runs per CPU in slot 0.
    prog = obj.find_program("lbt_xdp_flip")
    prog.test_run(bytes(64), repeat=25)
    counts = [U32.unpack(v)[0] for v in pmap.lookup_percpu(U32.pack(0))]
    assert len(counts) == ncpus and sum(counts) == 25


def test_prog_test_run_xdp(obj):
    prog = obj.find_program("lbt_xdp_flip")
    packet = bytes(range(64))
    result = libbpf.prog_test_run(prog.fd, packet, repeat=3)
    assert result.retval == libbpf.XDP_TX
    assert result.data_out == bytes([packet[0] ^ 0xff]) + packet[1:]
    assert result.duration_ns >= 0 and result.ctx_out is None

    with pytest.raises(libbpf.BpfError) as exc_info:
        prog.test_run(packet, data_size_out=10)
    assert exc_info.value.errno == errno.ENOSPC
    assert "needs 64" in str(exc_info.value)

    with pytest.raises(libbpf.BpfError) as exc_info:
        prog.test_run(b"\x00" * 4)  # shorter than an Ethernet header
    assert exc_info.value.errno == errno.EINVAL


def test_prog_test_run_tc_with_ctx(obj):
    obj.find_map("lbt_array").map().update(U32.pack(1), U64.pack(42))
    prog = obj.find_program("lbt_tc_mark")
    packet = b"\xff" * 12 + b"\x08\x00" + bytes(50)
    # struct __sk_buff: len, pkt_type, mark, ...; mark is at offset 8.
    result = prog.test_run(packet, ctx_in=bytes(12))
    assert result.retval == 0  # TC_ACT_OK
    assert result.ctx_out is not None and len(result.ctx_out) > 12
    assert U32.unpack_from(result.ctx_out, 8)[0] == 42


def test_pin_from_pin_and_map_reuse(prog_obj_path, pin_dir):
    map_pin = os.path.join(pin_dir, "lbt_hash")
    prog_pin = os.path.join(pin_dir, "lbt_xdp_flip")
    key, value = U32.pack(5), HASH_VALUE.pack(5, 6, 7)

    with libbpf.BpfObject.open(prog_obj_path) as first:
        handle = first.find_map("lbt_hash")
        assert handle.pin_path is None
        handle.set_pin_path(map_pin)
        assert handle.pin_path == map_pin and not handle.is_pinned
        first.load()
        assert handle.is_pinned and os.path.exists(map_pin)
        hmap = handle.map()
        map_id = hmap.id
        hmap.update(key, value)
        prog = first.find_program("lbt_xdp_flip")
        prog.pin(prog_pin)
        prog_id = prog.id

    # Pins keep map and program alive after the object is closed.
    with libbpf.Map.from_pin(map_pin) as pinned:
        assert pinned.owned and pinned.id == map_id
        assert pinned.lookup(key) == value
    with libbpf.Program.from_pin(prog_pin) as pinned_prog:
        assert pinned_prog.id == prog_id
        result = pinned_prog.test_run(bytes(14))
        assert result.retval == libbpf.XDP_TX

    # A second load with the same pin path reuses the pinned map: this is
    # what makes agent restarts hitless.
    with libbpf.BpfObject.open(prog_obj_path) as second:
        second.find_map("lbt_hash").set_pin_path(map_pin)
        second.load()
        hmap2 = second.find_map("lbt_hash").map()
        assert hmap2.id == map_id
        assert hmap2.lookup(key) == value
        # Unpinned maps are new on every load.
        assert second.find_map("lbt_array").map().id != map_id

    # A pinned map that does not match the definition fails the load,
    # with libbpf's explanation in the error.
    with libbpf.BpfObject.open(prog_obj_path) as third:
        handle = third.find_map("lbt_hash")
        handle.set_pin_path(map_pin)
        handle.set_max_entries(128)
        with pytest.raises(libbpf.BpfError) as exc_info:
            third.load()
    assert exc_info.value.errno == errno.EINVAL
    assert map_pin in str(exc_info.value)
    assert "mismatch" in exc_info.value.log

    # Plain obj_pin / obj_get / Map.pin.
    with libbpf.Map.from_pin(map_pin) as pinned:
        other = os.path.join(pin_dir, "again")
        libbpf.obj_pin(pinned.fd, other)
        fd = libbpf.obj_get(other)
        with libbpf.Map(fd) as by_fd:
            assert by_fd.id == map_id
        third_pin = os.path.join(pin_dir, "third")
        pinned.pin(third_pin)
        assert libbpf.Map.from_pin(third_pin).id == map_id
        with pytest.raises(libbpf.BpfError) as exc_info:
            pinned.pin(third_pin)
        assert exc_info.value.errno == errno.EEXIST
    with pytest.raises(libbpf.BpfError) as exc_info:
        libbpf.Map.from_pin(prog_pin)
    assert exc_info.value.errno == errno.EINVAL
    assert prog_pin in str(exc_info.value)


def test_error_messages(prog_obj_path, obj, bpffs, tmp_path):
    missing = "/nonexistent/lbt-%s.o" % secrets.token_hex(4)
    with pytest.raises(libbpf.BpfError) as exc_info:
        libbpf.BpfObject.open(missing)
    assert isinstance(exc_info.value, OSError)
    assert exc_info.value.errno == errno.ENOENT
    assert exc_info.value.operation == "bpf_object__open_file"
    assert missing in str(exc_info.value)

    not_elf = tmp_path / "not-elf.o"
    not_elf.write_text("hello\n")
    with pytest.raises(libbpf.BpfError) as exc_info:
        libbpf.BpfObject.open(not_elf)
    assert str(not_elf) in str(exc_info.value)
    assert "not a proper ELF object" in exc_info.value.log

    missing_pin = os.path.join(bpffs, "octavia-dsr-test-" +
                               secrets.token_hex(4), "nope")
    with pytest.raises(libbpf.BpfError) as exc_info:
        libbpf.Map.from_pin(missing_pin)
    assert exc_info.value.errno == errno.ENOENT
    assert missing_pin in str(exc_info.value)

    with pytest.raises(libbpf.BpfError) as exc_info:
        obj.find_map("no_such_map")
    assert exc_info.value.errno == errno.ENOENT
    assert "no_such_map" in str(exc_info.value)
    with pytest.raises(libbpf.BpfError, match="no_such_prog"):
        obj.find_program("no_such_prog")

    hmap = obj.find_map("lbt_hash").map()
    with pytest.raises(libbpf.BpfError) as exc_info:
        hmap.update(b"abc", HASH_VALUE.pack(0, 0, 0))
    assert exc_info.value.errno == errno.EINVAL
    assert "key is 3 bytes, map expects 4" in str(exc_info.value)
    assert "lbt_hash" in str(exc_info.value)
    with pytest.raises(libbpf.BpfError, match="value is 1 bytes"):
        hmap.update(U32.pack(0), b"x")
    with pytest.raises(libbpf.BpfError, match="key is 0 bytes"):
        hmap.lookup(b"")

    with pytest.raises(libbpf.BpfError) as exc_info:
        libbpf.Map.from_id(0xfffffff0)
    assert exc_info.value.errno == errno.ENOENT

    # A program fd is not a map (the kernel would fill a bpf_map_info with
    # program data without complaint), nor a map fd a program.
    with pytest.raises(libbpf.BpfError, match="not anon_inode:bpf-map"):
        libbpf.Map(obj.find_program("lbt_xdp_pass").fd, owned=False)
    with pytest.raises(libbpf.BpfError, match="not anon_inode:bpf-prog"):
        libbpf.Program(hmap.fd, owned=False)


def test_verifier_log_reaches_error_and_logging(bad_obj_path, caplog):
    caplog.set_level(logging.WARNING, logger=libbpf.__name__)
    with libbpf.BpfObject.open(bad_obj_path) as bad:
        with pytest.raises(libbpf.BpfError) as exc_info:
            bad.load()
    err = exc_info.value
    assert err.errno == errno.EACCES
    assert err.operation == "bpf_object__load"
    assert bad_obj_path in str(err)
    assert "lbt_xdp_bad" in err.log
    assert "invalid access to packet" in err.log
    assert "invalid access to packet" in str(err)
    assert any("invalid access to packet" in r.getMessage()
               for r in caplog.records)


def test_expected_failures_do_not_warn(obj, veth_netns, caplog):
    """EEXIST from tc_hook_create is a normal answer: libbpf's kernel
    message for it must not appear as a warning."""
    caplog.set_level(logging.DEBUG, logger=libbpf.__name__)

    def scenario():
        try:
            assert libbpf.tc_hook_create(veth_netns.ifindex) is True
            assert libbpf.tc_hook_create(veth_netns.ifindex) is False
        finally:
            libbpf.tc_hook_destroy(veth_netns.ifindex)

    veth_netns.run(scenario)
    assert [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING] == []
    assert any("Kernel error message" in r.getMessage()
               for r in caplog.records if r.levelno == logging.DEBUG)


def test_capture_is_per_call(bad_obj_path, prog_obj_path):
    """Messages from an earlier failure do not leak into later errors."""
    with libbpf.BpfObject.open(bad_obj_path) as bad:
        with pytest.raises(libbpf.BpfError):
            bad.load()
    with pytest.raises(libbpf.BpfError) as exc_info:
        libbpf.BpfObject.open(prog_obj_path + ".missing")
    assert "invalid access" not in str(exc_info.value)


# --------------------------------------------------------------------------
# attaching (inside a temporary network namespace)
# --------------------------------------------------------------------------

def test_xdp_attach_query_detach_generic(obj, veth_netns):
    flip = obj.find_program("lbt_xdp_flip")
    other = obj.find_program("lbt_xdp_pass")
    ifindex = veth_netns.ifindex
    skb = libbpf.XDP_FLAGS_SKB_MODE

    def scenario():
        assert libbpf.xdp_query(ifindex) == libbpf.XdpQueryResult(
            0, libbpf.XDP_ATTACHED_NONE, 0, 0, 0)
        try:
            libbpf.xdp_attach(ifindex, flip.fd, skb)
            state = libbpf.xdp_query(ifindex)
            assert state.attach_mode == libbpf.XDP_ATTACHED_SKB
            assert state.prog_id == flip.id == state.skb_prog_id
            assert state.drv_prog_id == 0

            with pytest.raises(libbpf.BpfError) as exc_info:
                libbpf.xdp_attach(ifindex, other.fd,
                                  skb | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST)
            assert exc_info.value.errno in (errno.EBUSY, errno.EEXIST)
            assert "ifindex %d" % ifindex in str(exc_info.value)

            # Atomic replace, guarded by the expected old program.
            with pytest.raises(libbpf.BpfError) as exc_info:
                libbpf.xdp_attach(ifindex, other.fd, skb,
                                  old_prog_fd=other.fd)
            assert exc_info.value.errno == errno.EEXIST
            libbpf.xdp_attach(ifindex, other.fd, skb, old_prog_fd=flip.fd)
            assert libbpf.xdp_query(ifindex).prog_id == other.id

            # Without the mode flag the kernel detaches in driver mode
            # (veth has native XDP): the generic program stays.
            libbpf.xdp_detach(ifindex, 0)
            assert libbpf.xdp_query(ifindex).skb_prog_id == other.id

            libbpf.xdp_detach(ifindex, skb)
            assert libbpf.xdp_query(ifindex).attach_mode == \
                libbpf.XDP_ATTACHED_NONE
        finally:
            try:
                libbpf.xdp_detach(ifindex, skb)
            except libbpf.BpfError:
                pass

    veth_netns.run(scenario)


def test_ifindex_is_resolved_in_calling_threads_netns(obj, veth_netns):
    prog = obj.find_program("lbt_xdp_pass")
    ifindex, skb = veth_netns.ifindex, libbpf.XDP_FLAGS_SKB_MODE

    def attach():
        libbpf.xdp_attach(ifindex, prog.fd, skb)
        return libbpf.xdp_query(ifindex).prog_id

    try:
        assert veth_netns.run(attach) == prog.id
        # The same ifindex from the test thread (another namespace) is some
        # other device or none at all; a missing device reads as "nothing
        # attached" rather than an error.
        assert libbpf.xdp_query(ifindex).prog_id != prog.id
        assert libbpf.xdp_query(0x7ffffff0) == libbpf.XdpQueryResult(
            0, libbpf.XDP_ATTACHED_NONE, 0, 0, 0)
    finally:
        veth_netns.run(libbpf.xdp_detach, ifindex, skb)


def test_tc_hook_attach_query_detach(obj, veth_netns):
    prog = obj.find_program("lbt_tc_mark")
    ifindex = veth_netns.ifindex
    ingress, egress = libbpf.BPF_TC_INGRESS, libbpf.BPF_TC_EGRESS

    def scenario():
        try:
            # No clsact qdisc yet: nothing to find, nothing to attach to.
            assert libbpf.tc_query(ifindex, ingress) is None
            assert libbpf.tc_detach(ifindex, ingress) is False
            with pytest.raises(libbpf.BpfError) as exc_info:
                libbpf.tc_attach(ifindex, prog.fd, ingress)
            assert exc_info.value.errno == errno.EINVAL
            assert "ifindex %d ingress" % ifindex in str(exc_info.value)
            assert "Kernel error message" in exc_info.value.log

            assert libbpf.tc_hook_create(ifindex, ingress) is True
            assert libbpf.tc_hook_create(ifindex, egress) is False  # clsact
            assert libbpf.tc_query(ifindex, ingress) is None  # empty hook

            info = libbpf.tc_attach(ifindex, prog.fd, ingress)
            assert info == libbpf.TcInfo(prog.id, 1, 1)
            assert libbpf.tc_query(ifindex, ingress) == info
            assert libbpf.tc_query(ifindex, ingress, priority=2) is None
            assert libbpf.tc_query(ifindex, egress) is None

            # Same slot again: replace (default) works, exclusive does not.
            assert libbpf.tc_attach(ifindex, prog.fd, ingress) == info
            with pytest.raises(libbpf.BpfError) as exc_info:
                libbpf.tc_attach(ifindex, prog.fd, ingress, replace=False)
            assert exc_info.value.errno == errno.EEXIST

            eg = libbpf.tc_attach(ifindex, prog.fd, egress, handle=7,
                                  priority=3)
            assert eg == libbpf.TcInfo(prog.id, 7, 3)
            assert libbpf.tc_query(ifindex, egress, handle=7,
                                   priority=3) == eg

            assert libbpf.tc_detach(ifindex, ingress) is True
            assert libbpf.tc_query(ifindex, ingress) is None
            assert libbpf.tc_detach(ifindex, ingress) is False

            with pytest.raises(libbpf.BpfError, match="priority in 1..65535"):
                libbpf.tc_query(ifindex, ingress, priority=0)

            assert libbpf.tc_hook_destroy(ifindex) is True
            assert libbpf.tc_query(ifindex, egress, handle=7,
                                   priority=3) is None
            assert libbpf.tc_hook_destroy(ifindex) is False
        finally:
            libbpf.tc_hook_destroy(ifindex)

    veth_netns.run(scenario)
