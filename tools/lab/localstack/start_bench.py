"""Lab start time with and without the schema templates, alternately.

    .venv/bin/python -m tools.lab.localstack.start_bench [--rounds 3]
        [--neutron-python .tempest-venv/bin/python]

Each round starts an OctaviaStack (noop provider) once with the host's
template (schema_template.py) and once migrating its own database
(DSR_LAB_SCHEMA_TEMPLATES=0), and prepares a NeutronServer and a
KeystoneServer both ways when their interpreter (the tempest venv) is
given; alternating, so both see the same load.
Prints one line per start (timings, load average) and the medians.  The
template is built before the first round: what a lab of a CI run pays
after the first.
"""

import argparse
import contextlib
import functools
import os
import statistics
import tempfile
import time

from tools.lab.localstack import octavia
from tools.lab.localstack import schema_template


@contextlib.contextmanager
def _templates(on):
    old = os.environ.get(schema_template.ENV_SWITCH)
    os.environ[schema_template.ENV_SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[schema_template.ENV_SWITCH]
        else:
            os.environ[schema_template.ENV_SWITCH] = old


def _load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def octavia_start(on):
    with tempfile.TemporaryDirectory(prefix="dsr-sb-") as d, _templates(on):
        stack = octavia.OctaviaStack(
            d, provider_drivers={"noop_driver": "no-op"},
            default_provider="noop_driver", transport_url=None,
            start_timeout=300)
        load = _load()
        with stack:
            return dict(stack.timings, load=load)


def prepare_time(server_class, on, python):
    """Seconds of server_class(...).prepare(): its database and keys."""
    with tempfile.TemporaryDirectory(prefix="dsr-sb-") as d, _templates(on):
        server = server_class(d, python=python)
        load = _load()
        t0 = time.monotonic()
        try:
            server.prepare()
            return {"prepared": time.monotonic() - t0, "load": load}
        finally:
            server.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--neutron-python",
                   help="the venv holding Neutron and Keystone")
    args = p.parse_args(argv)
    results = {}
    runs = [("octavia", octavia_start)]
    if args.neutron_python:
        python = os.path.abspath(args.neutron_python)
        from tools.lab.localstack import keystone
        from tools.lab.localstack import neutron_server
        for name, cls in (("neutron", neutron_server.NeutronServer),
                          ("keystone", keystone.KeystoneServer)):
            runs.append((name, functools.partial(prepare_time, cls,
                                                 python=python)))
    for _name, start in runs:
        start(True)          # builds the template if the host has none
    for i in range(args.rounds):
        for name, start in runs:
            for on in (True, False):
                t = start(on)
                results.setdefault((name, on), []).append(t)
                print(f"round {i} {name} template={'on' if on else 'off'}: "
                      + " ".join(f"{k}={v:.2f}" if isinstance(v, float)
                                 else f"{k}={v}" for k, v in t.items()),
                      flush=True)
    for (name, on), ts in sorted(results.items()):
        keys = [k for k in ts[0] if k != "load"]
        print(f"median {name} template={'on' if on else 'off'}: " + " ".join(
            f"{k}={statistics.median(t[k] for t in ts):.2f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
