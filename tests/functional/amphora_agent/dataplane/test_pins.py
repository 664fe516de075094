"""Pinning a reloaded program (amphora_agent/dataplane/pins.py) on a real
bpffs: a reader that opens the program pin while a reload re-pins it finds
the old program or the new one, never nothing."""

import os
import secrets
import shutil

import pytest

from amphora_agent.dataplane import decap
from amphora_agent.dataplane import libbpf
from amphora_agent.dataplane import pins
from tests.functional.amphora_agent.dataplane.decap_frames import NEEDS_BPF

pytestmark = NEEDS_BPF


@pytest.fixture
def pin_dir():
    path = f'/sys/fs/bpf/octavia-dsr-test-pins-{secrets.token_hex(4)}'
    yield path
    shutil.rmtree(path, ignore_errors=True)


def load(pin_dir):
    pins.load(os.path.join(pins.object_dir(), decap.OBJECT), pin_dir,
              decap.MAP_NAMES, decap.PROGRAM)


def program_id(pin_dir):
    with pins.open_program(pin_dir, decap.PROGRAM) as prog:
        return prog.info().id


def test_a_reload_keeps_the_program_pin_openable_while_it_re_pins(
        pin_dir, monkeypatch):
    load(pin_dir)
    old = program_id(pin_dir)
    seen = []
    real_pin = libbpf.Program.pin

    def pin_and_look(prog, path):
        # What a reader finds right before and right after the new program
        # is pinned: the old one, still at its path.
        seen.append(program_id(pin_dir))
        real_pin(prog, path)
        seen.append(program_id(pin_dir))

    monkeypatch.setattr(libbpf.Program, 'pin', pin_and_look)
    load(pin_dir)
    monkeypatch.undo()
    new = program_id(pin_dir)
    assert new != old
    assert seen == [old, old]
    assert sorted(os.listdir(pin_dir)) == sorted(
        decap.MAP_NAMES + (pins.prog_pin_name(decap.PROGRAM),))


def test_a_program_left_staged_by_a_killed_loader_is_replaced_and_removed(
        pin_dir):
    load(pin_dir)
    staged = os.path.join(pin_dir, pins.staged_pin_name(decap.PROGRAM))
    # A loader killed between its pin and its rename leaves this behind.
    with pins.open_program(pin_dir, decap.PROGRAM) as prog:
        prog.pin(staged)
    load(pin_dir)
    assert not os.path.exists(staged)
    with pins.open_program(pin_dir, decap.PROGRAM) as prog:
        prog.pin(staged)
    pins.remove(pin_dir, decap.MAP_NAMES, decap.PROGRAM)
    assert not os.path.exists(pin_dir)
