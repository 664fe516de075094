"""auth.shown: what a peer claimed, fit for one log line."""

from dsr_wire import auth


def test_plain_ids_are_shown_as_they_are():
    assert auth.shown('se1') == 'se1'
    assert auth.shown('l7:édge-1') == 'l7:édge-1'    # printable Unicode
    assert auth.shown(42) == '42' and auth.shown(None) == 'None'


def test_control_characters_are_escaped_and_long_values_cut():
    assert auth.shown('se1\nCRITICAL x') == 'se1\\nCRITICAL x'
    assert auth.shown('a\x1b[31mred') == 'a\\x1b[31mred'
    long = auth.shown('x' * 1000, limit=80)
    assert long == 'x' * 80 + '...'
