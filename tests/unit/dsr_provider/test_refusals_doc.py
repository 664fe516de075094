"""docs/refusals.md and dsr_provider/validation.py agree.

Every row of the document's tables gives an *Example*: a check name and the
fields of an octavia-lib object.  Each example must be refused, with a
message naming the row's option; and every refuse() call in validation.py
must be reached by at least one example, so a refusal added to the code
without documenting it fails here, as does a documented refusal the code
dropped.
"""

import ast
import json
import pathlib
import re
import sys

from octavia_lib.api.drivers import data_models as dm
from octavia_lib.api.drivers import exceptions
import pytest

from dsr_provider import validation

REPO = pathlib.Path(__file__).resolve().parents[3]
DOC = REPO / 'docs' / 'refusals.md'
SOURCE = pathlib.Path(validation.__file__)

# | option cell | ... | `check {"field": value}` |
_ROW = re.compile(r'^\|(?P<first>[^|]*)\|.*\|\s*`(?P<check>[a-z_0-9]+) '
                  r'(?P<args>\{.*\})`\s*\|\s*$')


def rows():
    """(option, check, args): option is the first `quoted` word of the
    row's first cell."""
    found = []
    for line in DOC.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            option = re.search(r'`([^`]+)`', m['first']).group(1)
            found.append((option, m['check'], json.loads(m['args'])))
    return found


def _squash(text):
    return re.sub(r'[\s_]', '', text).lower()


def _pool(args):
    listener_protocol = args.pop('listener_protocol', None)
    validation.check_pool(dm.Pool(**args),
                          listener_protocol=listener_protocol)


CHECKS = {
    'loadbalancer': lambda a: validation.check_loadbalancer(
        dm.LoadBalancer(**a)),
    'listener': lambda a: validation.check_listener(dm.Listener(**a)),
    'pool': _pool,
    'pool_ports': lambda a: validation.check_pool_ports(
        'p1', a['listener_ports'], []),
    'member': lambda a: validation.check_member(dm.Member(**a)),
    'member_port': lambda a: validation.check_member_port(
        dm.Member(protocol_port=a['protocol_port']), a['listener_port']),
    'healthmonitor': lambda a: validation.check_health_monitor(
        dm.HealthMonitor(**a)),
    # A tier-2 load balancer's objects (flavor tier 2).
    'tier2_listener': lambda a: validation.check_listener(
        dm.Listener(**a), tier=2),
    'tier2_pool': lambda a: validation.check_pool(dm.Pool(**a), tier=2),
    'tier2_healthmonitor': lambda a: validation.check_health_monitor(
        dm.HealthMonitor(**a), tier=2),
    'l7policy': lambda a: validation.check_l7policy(dm.L7Policy(**a)),
    'l7rule': lambda a: validation.check_l7rule(dm.L7Rule(**a)),
}


def refuse_sites():
    """Line numbers of every refuse(...) call in validation.py."""
    tree = ast.parse(SOURCE.read_text())
    return {node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == 'refuse'}


def run(check, args, reached):
    real = validation.refuse

    def recording(message):
        frame = sys._getframe(1)
        if frame.f_code.co_filename == str(SOURCE):
            reached.add(frame.f_lineno)
        real(message)
    validation.refuse = recording
    try:
        with pytest.raises(exceptions.UnsupportedOptionError) as info:
            CHECKS[check](dict(args))
    finally:
        validation.refuse = real
    return info.value.user_fault_string


def test_the_document_has_examples():
    assert len(rows()) >= 25


@pytest.mark.parametrize('option,check,args', rows(),
                         ids=[f'{c}-{o}' for o, c, _ in rows()])
def test_every_documented_refusal_is_refused(option, check, args):
    text = run(check, args, set())
    # The message names the option ("l7policies" matches "L7 policies").
    assert _squash(option) in _squash(text), text
    assert 'allowed' in text, text


def test_every_refusal_in_the_code_is_documented():
    reached = set()
    for _, check, args in rows():
        run(check, args, reached)
    missing = refuse_sites() - reached
    lines = SOURCE.read_text().splitlines()
    assert not missing, (
        'refuse() calls in dsr_provider/validation.py that no row of '
        'docs/refusals.md reaches (document them): '
        + '; '.join(f'line {n}: {lines[n - 1].strip()}'
                    for n in sorted(missing)))
