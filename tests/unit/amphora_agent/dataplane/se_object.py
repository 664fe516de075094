"""Marks of the unit tests that load the real SE object (maps only,
nothing attached): they need root and a BPF-capable kernel."""

import os

import pytest

from amphora_agent.dataplane import dataplane as dp_mod

NEEDS_SE_OBJECT = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
    pytest.mark.skipif(not os.path.exists(os.path.join(
        dp_mod.object_dir(), dp_mod.SE_OBJECT)), reason="run make first"),
]
