"""Decapsulation by the project's tc program (dataplane/decap.py), for
kernels without tunnel drivers: the same program and pins `dsrctl decap`
uses, attached to the uplink's clsact ingress."""

import errno
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
    """This release's pins, all of them."""
    return decap_mod.pinned(pin_dir)


def present(pin_dir):
    """Any pin of the decap, this release's or an earlier one's."""
    return decap_mod.present(pin_dir)


def runs_pinned(ifname, pin_dir):
    """Whether ``ifname``'s decap slot runs the program pinned under
    ``pin_dir`` (not one an earlier release loaded)."""
    prog_id = _attached_id(ifname)
    if prog_id is None:
        return False
    with pins.open_program(pin_dir, decap_mod.PROGRAM) as prog:
        return prog.id == prog_id


def _running(pin_dir):
    """The interfaces of this host whose decap slot runs the program
    pinned under pin_dir (the pin read once, not once per interface);
    none when no program is pinned there."""
    try:
        with pins.open_program(pin_dir, decap_mod.PROGRAM) as prog:
            pinned_id = prog.id
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise
    return [name for _, name in socket.if_nameindex()
            if _attached_id(name) == pinned_id]


def ensure(ifname, addresses, pin_dir, journal, sources=()):
    """Load (unless pinned), give ``addresses`` to the decap set,
    restricted to ``sources`` (the SEs' tunnel sources; none: any source),
    and attach to ``ifname``.  Returns report lines.  Records what it did:
    whether it loaded the pins and attached the program, the addresses and
    sources it gives (counted in the maps: other setups may give the same
    ones, in any state folder).  A setup run again with other addresses or
    sources takes back those it no longer gives.  Holds the pin folder's
    lock."""
    record = journal.data['decap'] or {
        'mode': 'ebpf', 'interface': ifname, 'pin_dir': pin_dir,
        'loaded': False, 'attached': False, 'addresses': []}
    record.setdefault('sources', [])
    if record.get('mode') != 'ebpf' or record['interface'] != ifname \
            or record['pin_dir'] != pin_dir:
        raise RuntimeError(
            f'a previous setup prepared {record.get("mode")} decap on '
            f'{record.get("interface")}: run "dsr-member teardown" first')
    # Recorded before anything changes: a failure half way still leaves
    # teardown what to take back.
    journal.data['decap'] = record
    with decap_mod.locked(pin_dir):
        return _ensure(record, ifname, addresses, pin_dir, sources)


def _gave_open(record):
    """Whether the setup gave its addresses open to any source (recorded
    since session 25's release; before, it followed its sources)."""
    return record.get('open', not record.get('sources'))


def _ensure(record, ifname, addresses, pin_dir, sources):
    lines = []
    # An earlier release's pins are upgraded by Decap.open, not loaded by
    # this setup: its teardown must not take them from their owner.
    was_present = present(pin_dir)
    was_attached = is_attached(ifname)
    asked = sorted({str(a) for a in sources})
    given = set(record['sources'])
    restricted = bool(asked)
    # Over this release's pins the installed program is loaded again and
    # swapped in (tc replace: atomic) wherever the pinned one runs: pins
    # that outlived an upgrade (no reboot) would keep the earlier build's
    # program, and the last teardown finds the interfaces by the pinned
    # program.  The maps stay.
    reload = pinned(pin_dir)
    running = _running(pin_dir) if reload else []
    old_tag = pins.program_tag(pin_dir, decap_mod.PROGRAM)
    with decap_mod.Decap.open(pin_dir, reload=reload) as d:
        for name in running:
            d.attach(name)
        new_tag = pins.program_tag(pin_dir, decap_mod.PROGRAM)
        if running and new_tag != old_tag:
            lines.append(f'+ decap on {", ".join(running)} replaced by the '
                         f'installed program (tag {old_tag} -> {new_tag})')
        if not was_present:
            record['loaded'] = True
            lines.append(f'+ decap program loaded, pinned under {pin_dir}')
        # Sources first, so that no restriction ever comes before them.
        # One it gave that is gone (dsrctl set the list by hand) is given
        # again.
        gone = given - set(d.sources())
        give = sorted((set(asked) - given) | (set(asked) & gone))
        if give:
            d.give_sources(give)
            record['sources'] = sorted((given - gone) | set(give))
            lines.append('+ decap SE sources ' + ', '.join(give))
        # Addresses.  The record says, after each step, exactly what this
        # setup gives and how: a run that fails half way and a run again
        # never count anything twice.
        had = set(record['addresses'])
        wanted = {str(a) for a in addresses}
        dropped = sorted(had - wanted)
        if dropped:
            d.take_addresses(dropped, not _gave_open(record))
            record['addresses'] = sorted(had & wanted)
            lines.append('- decap for ' + ', '.join(dropped)
                         + ' (no longer given)')
        kept = sorted(had & wanted)
        if kept and _gave_open(record) == restricted:
            d.regive_addresses(kept, restricted)
        record['open'] = not restricted
        # Given before but gone from the map (dsrctl set the list by hand):
        # given again, as new ones.
        lost = sorted(set(kept) - set(d.addresses()))
        new = sorted(wanted - had)
        if new or lost:
            fresh = d.give_addresses(sorted(set(new) | set(lost)),
                                     restricted)
            record['addresses'] = sorted(wanted)
            if fresh:
                lines.append('+ decap for ' + ', '.join(fresh)
                             + (' from the SE sources only' if restricted
                                else ''))
            shared = sorted(set(new) - set(fresh))
            if shared:
                lines.append('= decap for ' + ', '.join(shared)
                             + ': another setup gives it too')
        # A dsrctl override of the restriction is undone by a run again.
        d.settle(sorted(wanted))
        # Then the sources this setup no longer gives (an SE replaced).
        dropped = sorted(given - set(asked) - gone)
        if dropped:
            d.take_sources(dropped)
            lines.append('- decap SE sources ' + ', '.join(dropped))
        record['sources'] = asked
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
    return lines


def remove(record):
    """Undo ``ensure``'s record, under the pin folder's lock.  Returns
    report lines.  The pins and the attachments go with the last setup
    out (no tunnel address left in them), whichever loaded them: one
    setup's teardown never stops another's decap."""
    with decap_mod.locked(record['pin_dir']):
        return _remove(record)


def _detach(ifname, lines):
    try:
        if decap_mod.Decap.detach(ifname):
            lines.append(f'- decap detached from {ifname}')
    except decap_mod.DecapError:
        pass  # the interface is gone, and the attachment with it


def _remove(record):
    lines = []
    pin_dir = record['pin_dir']
    ifname = record['interface']
    if not present(pin_dir):
        if record.get('attached'):
            _detach(ifname, lines)
        return lines
    if not pinned(pin_dir):
        # An earlier release's pins: nothing to read them with but a load,
        # and nobody else can be using this release's decap on them.
        if record.get('attached'):
            _detach(ifname, lines)
        if record.get('loaded'):
            decap_mod.remove_pins(pin_dir)
            lines.append(f'- decap pins removed from {pin_dir}')
        return lines
    with decap_mod.Decap.open(pin_dir) as d:
        # Each taken back once: the record forgets it at once (a teardown
        # run again after a later failure takes nothing twice).
        if record.get('addresses'):
            addresses = record['addresses']
            gone = d.take_addresses(addresses, not _gave_open(record))
            record['addresses'] = []
            if gone:
                lines.append('- decap for ' + ', '.join(gone))
            shared = sorted(set(addresses) - set(gone))
            if shared:
                lines.append('= decap for ' + ', '.join(shared)
                             + ' kept: another setup gives it')
        if record.get('sources'):
            sources = record['sources']
            d.take_sources(sources)
            record['sources'] = []
            lines.append('- decap SE sources ' + ', '.join(sources))
        others = d.addresses()
    if others:
        lines.append(f'= decap kept under {pin_dir}: still decapsulating '
                     f'for {", ".join(others)}')
        return lines
    # The last one out: off every interface of this host that runs it.
    running = _running(pin_dir)
    for _, name in socket.if_nameindex():
        if name in running or (name == ifname and record.get('attached')):
            _detach(name, lines)
    decap_mod.remove_pins(pin_dir)
    lines.append(f'- decap pins removed from {pin_dir}')
    return lines


def _read(pin_dir, read):
    """read(Decap) of this release's pins, None when they are not there."""
    if not pinned(pin_dir):
        return None
    with decap_mod.Decap.open(pin_dir) as d:
        return read(d)


def stats(pin_dir):
    """The decap counters, or None when the pins are not there."""
    return _read(pin_dir, lambda d: d.stats())


def state(pin_dir):
    """{'addresses', 'sources' ([]: any), 'restricted' (the addresses
    that take the sources' packets only), 'given_open' (those another
    setup or dsrctl gave open to any source)}, or None without the
    pins."""
    return _read(pin_dir, lambda d: {'addresses': d.addresses(),
                                     'sources': d.sources(),
                                     'restricted': d.restricted(),
                                     'given_open': d.given_open()})
