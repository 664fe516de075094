"""Loading a BPF object with its maps and program pinned in a directory.

Maps are reused when already pinned (libbpf checks they are compatible), so
loading again upgrades the program while the live state stays; the program
pin is replaced, never the attachment (attaching swaps programs).  The new
program is pinned beside the old one and renamed over it, so a reader that
opens the pin meanwhile (dsrctl show, dsr-member check) finds one of the
two, never nothing.
"""

import errno
import os

from amphora_agent.dataplane import libbpf


def object_dir():
    return os.environ.get(
        'OCTAVIA_DSR_OBJ_DIR',
        os.path.join(os.path.dirname(os.path.abspath(__file__)), 'obj'))


def prog_pin_name(program):
    return 'prog_' + program


def staged_pin_name(program):
    # Where a new program waits for its rename; left behind only by a
    # loader killed in between, and removed by the next load or remove().
    # (bpffs refuses dots in names.)
    return 'staged_' + prog_pin_name(program)


def pinned(pin_dir, map_names, program):
    return all(os.path.exists(os.path.join(pin_dir, name))
               for name in tuple(map_names) + (prog_pin_name(program),))


def load(obj_path, pin_dir, map_names, program, max_entries=None):
    """Load obj_path; returns nothing, everything is pinned in pin_dir.

    Raises FileNotFoundError naming the object when it was not built."""
    if not os.path.exists(obj_path):
        raise FileNotFoundError(f'BPF object {obj_path} is missing: run '
                                '"make"')
    max_entries = max_entries or {}
    os.makedirs(pin_dir, exist_ok=True)
    with libbpf.BpfObject.open(obj_path) as obj:
        for name in map_names:
            handle = obj.find_map(name)
            handle.set_pin_path(os.path.join(pin_dir, name))
            if name in max_entries:
                handle.set_max_entries(max_entries[name])
        obj.load()
        staged = os.path.join(pin_dir, staged_pin_name(program))
        if os.path.exists(staged):
            os.unlink(staged)
        obj.find_program(program).pin(staged)
        # bpffs renames over an existing pin atomically.
        os.rename(staged, os.path.join(pin_dir, prog_pin_name(program)))


def open_maps(pin_dir, map_names):
    """{name: Map} of the pinned maps; those already open are closed when
    one fails (a pin removed meanwhile)."""
    maps = {}
    try:
        for name in map_names:
            maps[name] = libbpf.Map.from_pin(os.path.join(pin_dir, name))
    except BaseException:
        for m in maps.values():
            m.close()
        raise
    return maps


def open_program(pin_dir, program):
    return libbpf.Program.from_pin(
        os.path.join(pin_dir, prog_pin_name(program)))


def program_tag(pin_dir, program):
    """The kernel's tag of the program pinned in pin_dir (a hash of its
    instructions: the same object loaded again has the same tag), None
    when none is pinned."""
    try:
        with open_program(pin_dir, program) as prog:
            return prog.info().tag
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def remove(pin_dir, map_names, program):
    """Remove the pins (and the directory when it is left empty)."""
    for name in tuple(map_names) + (prog_pin_name(program),
                                    staged_pin_name(program)):
        path = os.path.join(pin_dir, name)
        if os.path.exists(path):
            os.unlink(path)
    try:
        os.rmdir(pin_dir)
    except OSError:
        pass
