"""Decapsulation by the project's tc program (dataplane/decap.py), for
kernels without tunnel drivers: the same program and pins `dsrctl decap`
uses, attached to the uplink's clsact ingress."""

import os
import socket

from amphora_agent.dataplane import decap as decap_mod
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import pins

DEFAULT_PIN_DIR = decap_mod.DEFAULT_PIN_DIR


def unavailable():
    """Why the eBPF path cannot run here, or None."""
    obj = os.path.join(pins.object_dir(), decap_mod.OBJECT)
    if not os.path.exists(obj):
        return f'the decap program {obj} is not built (run "make")'
    if not os.path.isdir('/sys/fs/bpf'):
        return '/sys/fs/bpf does not exist (no bpffs)'
    return None


def _attached_id(ifname):
    """Id of the program at the decap's tc slot of ``ifname``'s ingress,
    None when nothing (or no such interface) is there."""
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        return None
    info = libbpf.tc_query(ifindex, libbpf.BPF_TC_INGRESS,
                           handle=decap_mod.TC_HANDLE,
                           priority=decap_mod.TC_PRIORITY)
    return None if info is None else info.prog_id


def attached_program(ifname):
    """Name of the program at the decap's tc slot of ``ifname``'s ingress,
    None when nothing is attached there."""
    prog_id = _attached_id(ifname)
    if prog_id is None:
        return None
    with libbpf.Program.from_id(prog_id) as prog:
        return prog.name


def is_attached(ifname):
    return attached_program(ifname) == decap_mod.PROGRAM


def pinned(pin_dir):
    return pins.pinned(pin_dir, decap_mod.MAP_NAMES, decap_mod.PROGRAM)


def runs_pinned(ifname, pin_dir):
    """Whether ``ifname``'s decap slot runs the program pinned under
    ``pin_dir`` (not one an earlier release loaded)."""
    prog_id = _attached_id(ifname)
    if prog_id is None:
        return False
    with pins.open_program(pin_dir, decap_mod.PROGRAM) as prog:
        return prog.id == prog_id


def ensure(ifname, addresses, pin_dir, journal, sources=()):
    """Load (unless pinned), add ``addresses`` to the decap set (and
    ``sources`` to the SE tunnel sources it accepts) and attach to
    ``ifname``.  Returns report lines.  Records what it did: whether it
    loaded the pins, attached the program, and which addresses and
    sources it added."""
    record = journal.data['decap'] or {
        'mode': 'ebpf', 'interface': ifname, 'pin_dir': pin_dir,
        'loaded': False, 'attached': False, 'addresses': []}
    record.setdefault('sources', [])
    if record.get('mode') != 'ebpf' or record['interface'] != ifname \
            or record['pin_dir'] != pin_dir:
        raise RuntimeError(
            f'a previous setup prepared {record.get("mode")} decap on '
            f'{record.get("interface")}: run "dsr-member teardown" first')
    lines = []
    was_pinned = pinned(pin_dir)
    was_attached = is_attached(ifname)
    with decap_mod.Decap.open(pin_dir) as d:
        if not was_pinned:
            record['loaded'] = True
            lines.append(f'+ decap program loaded, pinned under {pin_dir}')
        present = set(d.addresses())
        wanted = {str(a) for a in addresses}
        new = sorted(wanted - present)
        if new:
            d.set_addresses(sorted(present | wanted))
            record['addresses'] = sorted(set(record['addresses']) | set(new))
            lines.append('+ decap for ' + ', '.join(new))
        present = set(d.sources())
        new = sorted({str(a) for a in sources} - present)
        if new:
            d.set_sources(sorted(present | set(new)))
            record['sources'] = sorted(set(record['sources']) | set(new))
            lines.append('+ decap only from SE sources ' + ', '.join(
                sorted(present | set(new))))
        if not was_attached:
            d.attach(ifname)
            record['attached'] = True
            lines.append(f'+ decap attached to {ifname} (tc ingress)')
        elif not runs_pinned(ifname, pin_dir):
            # An upgrade loaded the program again: the one attached is
            # the earlier release's, with the earlier maps.
            d.attach(ifname)
            lines.append(f'+ decap on {ifname} replaced by the program '
                         f'pinned under {pin_dir}')
        else:
            lines.append(f'= decap attached to {ifname} (already)')
    journal.data['decap'] = record
    return lines


def remove(record):
    """Undo ``ensure``'s record.  Returns report lines."""
    lines = []
    pin_dir = record['pin_dir']
    if record.get('attached'):
        try:
            if decap_mod.Decap.detach(record['interface']):
                lines.append(f'- decap detached from {record["interface"]}')
        except decap_mod.DecapError:
            pass  # the interface is gone, and the attachment with it
    if not pinned(pin_dir):
        return lines
    if record.get('loaded'):
        decap_mod.Decap.open(pin_dir).destroy()
        lines.append(f'- decap pins removed from {pin_dir}')
    elif record.get('addresses') or record.get('sources'):
        with decap_mod.Decap.open(pin_dir) as d:
            if record.get('addresses'):
                d.set_addresses(sorted(set(d.addresses())
                                       - set(record['addresses'])))
                lines.append('- decap for ' + ', '.join(record['addresses']))
            if record.get('sources'):
                d.set_sources(sorted(set(d.sources())
                                     - set(record['sources'])))
                lines.append('- decap SE sources '
                             + ', '.join(record['sources']))
    return lines


def stats(pin_dir):
    """The decap counters, or None when the pins are not there."""
    if not pinned(pin_dir):
        return None
    with decap_mod.Decap.open(pin_dir) as d:
        return d.stats()


def addresses(pin_dir):
    if not pinned(pin_dir):
        return None
    with decap_mod.Decap.open(pin_dir) as d:
        return d.addresses()


def sources(pin_dir):
    """The SE sources decapsulated for ([]: any), None without pins."""
    if not pinned(pin_dir):
        return None
    with decap_mod.Decap.open(pin_dir) as d:
        return d.sources()
