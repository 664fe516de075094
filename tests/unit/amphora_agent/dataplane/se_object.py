"""Marks of the unit tests that load the real SE object (maps only,
nothing attached): they need root and a BPF-capable kernel; and the
previous release's listener pin, made for the upgrade tests."""

import os
import subprocess

import pytest

from amphora_agent.dataplane import dataplane as dp_mod
from amphora_agent.dataplane import libbpf

NEEDS_SE_OBJECT = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
    pytest.mark.skipif(not os.path.exists(os.path.join(
        dp_mod.object_dir(), dp_mod.SE_OBJECT)), reason="run make first"),
]


def pin_old_listeners(pin_dir, entries, max_entries,
                      value_size=dp_mod.RETIRED_LISTENER_SIZE):
    """What the previous release pinned for its listener entries: a hash
    'listeners' of VipKey -> the Listener fields before check (bpftool
    makes it, as that release's loader did from its object), holding
    entries (this release's values, cut).  Returns its path."""
    path = os.path.join(pin_dir, dp_mod.RETIRED_LISTENER_MAP)
    subprocess.run(['bpftool', 'map', 'create', path, 'type', 'hash',
                    'key', '20', 'value', str(value_size), 'entries',
                    str(max_entries), 'name', 'listeners'], check=True)
    with libbpf.Map.from_pin(path) as old:
        for key, value in entries.items():
            old.update(key, value[:value_size])
    return path
