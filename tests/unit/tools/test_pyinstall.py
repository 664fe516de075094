"""tools/pyinstall.py: pip's package sources handed to uv, and the switch
back to pip."""

import subprocess

from tools import pyinstall

# What `pip config list` printed on the CI machine (pip.conf files and
# PIP_* variables), one value per key and scope, Python-quoted.
PIP_CONFIG = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def test_sources_every_index_link_and_constraint():
    assert pyinstall.sources_from_config(PIP_CONFIG) == [
        '--extra-index-url', 'file:///opt/pypi/simple',
        '--extra-index-url', 'file:///opt/pypi-more/simple',
        '--find-links', '/opt/wheels',
        '--constraint', '/etc/xdg/pip/constraints.txt',
    ]


def test_sources_follow_pips_precedence():
    # Printed sorted; pip install applies [global], then [install], then
    # the environment; other commands' sections do not count.
    text = (":env:.find-links='/from/env'\n"
            "download.index-url='https://download.example/simple'\n"
            "global.find-links='/from/global'\n"
            "global.index-url='https://global.example/simple'\n"
            "install.index-url='https://install.example/simple'\n"
            "install.no-index='true'\n"
            "global.timeout='60'\n")
    assert pyinstall.sources_from_config(text) == [
        '--index-url', 'https://install.example/simple',
        '--find-links', '/from/env', '--no-index']


def test_sources_of_an_unconfigured_pip_are_none():
    assert pyinstall.sources_from_config('') == []


def test_pip_when_asked_runs_no_bootstrap(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setenv('DSR_INSTALLER', 'pip')
    monkeypatch.setattr(subprocess, 'run', lambda *a, **k: ran.append(a))
    assert pyinstall._uv(tmp_path / 'bin' / 'python', log=print) is None
    assert ran == []
