"""The local Octavia stack (tools/lab/localstack/octavia.py) end to end.

A real Octavia 19 API + driver agent on a private MariaDB database, the
built-in noop_driver provider, the real `openstack` CLI and openstacksdk.
noop_driver never reports a status, so the test acts as the provider through
the driver agent's status socket (OctaviaStack.report_loadbalancer_status),
which is also what makes `--wait` return.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tools.lab.localstack import cli_zygote
from tools.lab.localstack.neutron_stub import NeutronStub
from tools.lab.localstack.octavia import OctaviaStack
from tools.lab.localstack.octavia import registered_providers
from tools.lab.localstack.octavia import StackError
from tools.lab.localstack import services
from tools.lab import netns

NOOP = {"noop_driver": "The No-Op driver"}

# openstacksdk 4.22 warns about its own internals on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore::PendingDeprecationWarning:openstack")


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _refused(url):
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _cli(stack, *args):
    """Start the openstack CLI in the background (for --wait)."""
    return subprocess.Popen(
        [str(stack.bindir / "openstack"), *args], env=stack.cli_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"CLI failed ({proc.returncode}): {err}"
    return out


def _lb_by_name(conn, name):
    found = list(conn.load_balancer.load_balancers(name=name))
    return found[0] if found else None


@pytest.mark.timeout(120)
def test_octavia_stack_cli_sdk_lifecycle(tmp_path, capsys):
    stack = OctaviaStack(tmp_path / "octavia", provider_drivers=NOOP,
                         default_provider="noop_driver")
    t0 = time.monotonic()
    try:
        stack.start()
        with capsys.disabled():
            timings = ', '.join(f'{k} {v:.2f}'
                                for k, v in stack.timings.items())
            print(f"\n[octavia-stack] start {stack.start_seconds:.2f} s "
                  f"({timings})")
        assert stack.api_url.startswith("http://127.0.0.1:")
        for path in stack.driver_agent_sockets.values():
            assert path.startswith(str(tmp_path)) and os.path.exists(path)
        assert stack.openrc_path.read_text().count("OS_AUTH_TYPE=none") == 1
        assert stack.database_exists()
        pids = stack.pids
        assert set(pids) == {"api", "driver_agent"}

        subnet_id = str(uuid.uuid4())
        stack.add_subnet(subnet_id, "192.0.2.0/24")
        assert stack.openstack("loadbalancer", "list", json_output=True) == []
        # stack.openstack() forks the CLI from its zygote (cli_zygote.py).
        zygote = stack._cli.proc.pid
        providers = stack.openstack("loadbalancer", "provider", "list",
                                    json_output=True)
        assert [p["name"] for p in providers] == ["noop_driver"]

        # --- the real CLI, --wait; we play the provider reporting ACTIVE.
        conn = stack.sdk()
        create = _cli(stack, "loadbalancer", "create", "--name", "lb-cli",
                      "--provider", "noop_driver", "--vip-subnet-id",
                      subnet_id, "--wait", "-f", "json")
        lb_cli = netns.wait_for(lambda: _lb_by_name(conn, "lb-cli"), 20,
                                "lb-cli in the API")
        assert lb_cli.provisioning_status == "PENDING_CREATE"
        stack.report_loadbalancer_status(lb_cli.id, "ACTIVE", "ONLINE")
        _finish(create)
        shown = stack.openstack("loadbalancer", "show", lb_cli.id,
                                json_output=True)
        assert shown["provisioning_status"] == "ACTIVE"
        assert shown["operating_status"] == "ONLINE"
        assert shown["provider"] == "noop_driver"
        assert shown["vip_subnet_id"] == subnet_id
        assert shown["project_id"] == stack.project_id
        # The forked CLI answers as the console script does, failures too.
        assert json.loads(_finish(_cli(stack, "loadbalancer", "show",
                                       lb_cli.id, "-f", "json"))) == shown
        missing = stack.openstack("loadbalancer", "show", "nope",
                                  check=False)
        script = _cli(stack, "loadbalancer", "show", "nope")
        script_err = script.communicate(timeout=30)[1]
        assert missing.returncode == script.returncode == 1
        assert missing.stderr == script_err

        # --- openstacksdk (no Neutron look-up on this path), another project.
        lb_sdk = stack.sdk(project_id="tenant-b").load_balancer \
            .create_load_balancer(name="lb-sdk", vip_subnet_id=subnet_id,
                                  provider="noop_driver")
        assert lb_sdk.project_id == "tenant-b"
        stack.report_loadbalancer_status(lb_sdk.id, "ACTIVE", "ONLINE")
        lb_sdk = conn.load_balancer.wait_for_load_balancer(
            lb_sdk.id, status="ACTIVE", interval=0.1, wait=10)
        assert lb_sdk.provider == "noop_driver"

        listed = stack.openstack("loadbalancer", "list", json_output=True)
        assert sorted(lb["name"] for lb in listed) == ["lb-cli", "lb-sdk"]
        assert {lb["provisioning_status"] for lb in listed} == {"ACTIVE"}
        assert sorted(lb.name for lb in conn.load_balancer.load_balancers()) \
            == ["lb-cli", "lb-sdk"]
        # --project goes through the API's Keystone look-up shim.
        only_b = stack.openstack("loadbalancer", "list", "--project",
                                 "tenant-b", json_output=True)
        assert [lb["name"] for lb in only_b] == ["lb-sdk"]

        # --- delete both; the provider (us) reports DELETED.
        delete = _cli(stack, "loadbalancer", "delete", "--wait", "lb-cli")
        netns.wait_for(lambda: conn.load_balancer.get_load_balancer(
            lb_cli.id).provisioning_status == "PENDING_DELETE", 20,
            "lb-cli PENDING_DELETE")
        stack.report_loadbalancer_status(lb_cli.id, "DELETED")
        _finish(delete)
        conn.load_balancer.delete_load_balancer(lb_sdk.id)
        stack.report_loadbalancer_status(lb_sdk.id, "DELETED")
        assert list(conn.load_balancer.load_balancers()) == []
        assert stack.openstack("loadbalancer", "list", json_output=True) == []
    finally:
        stack.stop()

    # --- nothing left behind.
    pids["cli zygote"] = zygote
    for name, pid in pids.items():
        assert _gone(pid), f"{name} pid {pid} still alive"
        assert _group_gone(pid), f"{name} process group {pid} still alive"
    assert not stack.database_exists()
    for path in stack.driver_agent_sockets.values():
        assert not os.path.exists(path)
    assert _refused(stack.api_url)
    assert _refused(stack.neutron_url)
    stack.stop()    # idempotent
    with capsys.disabled():
        print(f"[octavia-stack] whole test {time.monotonic() - t0:.1f} s")


def test_unknown_provider_fails_before_starting_anything(tmp_path):
    stack = OctaviaStack(tmp_path / "o", provider_drivers={"nope": "x"},
                         default_provider="nope")
    with pytest.raises(StackError, match="octavia.api.drivers"):
        stack.start()
    assert not (tmp_path / "o").exists()
    assert stack.pids == {}
    assert "noop_driver" in registered_providers()


def test_services_answer():
    # Starts whatever does not answer; a running service is left alone.
    states = services.ensure("mariadb", "redis", "rabbitmq")
    assert set(states.values()) <= {"running", "started"}
    assert services.mariadb_answers() and services.redis_answers() \
        and services.rabbitmq_answers()


@pytest.mark.skipif(not shutil.which("redis-server"),
                    reason="redis-server not installed")
def test_services_start_what_does_not_answer(tmp_path, monkeypatch):
    # The start-and-poll path, on a private Redis on a free port (the
    # machine's services are never stopped to test this).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pidfile = tmp_path / "redis.pid"
    monkeypatch.setitem(services.PORTS, "redis", port)
    monkeypatch.setitem(services.STARTERS, "redis", (lambda: [
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1",
        "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), "--pidfile", str(pidfile),
        "--logfile", str(tmp_path / "redis.log")], "redis-server"))
    assert not services.redis_answers()
    try:
        assert services.ensure_one("redis", timeout=10) == "started"
        assert services.ensure_one("redis") == "running"
    finally:
        pid = int(netns.wait_for(lambda: pidfile.exists()
                                 and pidfile.read_text().strip() or None,
                                 20, "redis pid file"))
        os.kill(pid, 15)
        netns.wait_for(lambda: _gone(pid), 20, "private redis exit")


def test_neutron_stub_lookups():
    import json
    import urllib.error
    import urllib.request
    stub = NeutronStub(project_id="p1").start()
    try:
        sub = stub.add_subnet(None, "2001:db8::/64")
        base = stub.url

        def get(path):
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return json.load(r)

        assert get("/")["versions"][0]["id"] == "v2.0"
        assert get(f"/v2.0/subnets/{sub['id']}")["subnet"]["ip_version"] == 6
        found = get(f"/v2.0/subnets?id={sub['id']}&fields=id&fields=cidr")
        assert found == {"subnets": [{"id": sub["id"],
                                      "cidr": "2001:db8::/64"}]}
        net = get(f"/v2.0/networks/{sub['network_id']}")["network"]
        assert net["subnets"] == [sub["id"]]
        assert get("/v2.0/subnets?name=nope") == {"subnets": []}
        with pytest.raises(urllib.error.HTTPError) as e:
            get("/v2.0/subnets/nope")
        assert e.value.code == 404
    finally:
        stub.stop()


@pytest.mark.timeout(120)
@pytest.mark.skipif("dsr" not in registered_providers(),
                    reason="no 'dsr' octavia.api.drivers entry point yet")
def test_dsr_provider_is_enabled(tmp_path):
    # Default providers: only dsr.  The API drops a provider it cannot load
    # (it logs and goes on), so the provider list tells whether it loaded.
    with OctaviaStack(tmp_path / "octavia") as stack:
        providers = stack.openstack("loadbalancer", "provider", "list",
                                    json_output=True)
        assert [p["name"] for p in providers] == ["dsr"], \
            (stack.log_paths["api"].read_text()[-3000:])


def test_cli_zygote_times_out_a_hung_call_and_serves_the_next(tmp_path):
    # An endpoint that accepts and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    env = dict(os.environ, OS_AUTH_TYPE="none",
               OS_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}")
    zygote = cli_zygote.CliZygote(sys.executable, tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            zygote.run(["loadbalancer", "list"], env, timeout=2)
        assert time.monotonic() - t0 < 10
        version = zygote.run(["--version"], env, timeout=30)
        assert version.returncode == 0
        assert (version.stdout + version.stderr).startswith("openstack ")
        pid = zygote.proc.pid
    finally:
        zygote.stop()
        silent.close()
    assert _gone(pid)
    assert not os.path.exists(zygote.path)
