"""A minimal, read-only Neutron API for clients that look resources up.

`openstack loadbalancer create --vip-subnet-id X`, `... member create
--subnet-id X` (and --vip-network-id / --vip-port-id) make the client find the
subnet, network or port in Neutron before it calls Octavia.  Octavia itself
runs with the noop network driver and never asks Neutron.  This stub answers
those look-ups from resources the caller registers:

    stub = NeutronStub()
    stub.start()                     # 127.0.0.1:<free port>, daemon thread
    stub.add_subnet("0f3c...", "192.0.2.0/24")
    ... stub.url ...
    stub.stop()

Served: GET / (version discovery), GET /v2.0/ , /v2.0/extensions,
/v2.0/{subnets,networks,ports}[?attr=value&fields=...] and
/v2.0/{subnets,networks,ports}/<id>.  Anything else: 404 (GET) or 405.
Clients point at it with the per-service endpoint override, e.g.
OS_NETWORK_ENDPOINT_OVERRIDE=<url> for the openstack CLI or
network_endpoint_override=<url> for openstacksdk.
"""

import ipaddress
import json
from socketserver import ThreadingMixIn
import threading
from urllib.parse import parse_qs
import uuid
from wsgiref.simple_server import make_server
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer

COLLECTIONS = {"subnets": "subnet", "networks": "network", "ports": "port"}


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class NeutronStub:
    """Thread-safe registry of subnets/networks/ports plus a WSGI app."""

    def __init__(self, project_id="", host="127.0.0.1", port=0):
        self.project_id = project_id
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._data = {name: {} for name in COLLECTIONS}
        self._server = None
        self._thread = None

    # -- registry -----------------------------------------------------------
    def add_network(self, network_id=None, name="", **extra):
        network_id = network_id or str(uuid.uuid4())
        net = {"id": network_id, "name": name or f"net-{network_id[:8]}",
               "admin_state_up": True, "status": "ACTIVE", "shared": False,
               "subnets": [], "tenant_id": self.project_id,
               "project_id": self.project_id, "mtu": 1500,
               "router:external": False, "port_security_enabled": True,
               "availability_zones": [], "tags": [], "description": ""}
        net.update(extra)
        with self._lock:
            old = self._data["networks"].get(network_id)
            if old:
                net["subnets"] = old["subnets"]
            self._data["networks"][network_id] = net
        return dict(net)

    def add_subnet(self, subnet_id=None, cidr="192.0.2.0/24", ip_version=None,
                   network_id=None, name="", gateway_ip=None, **extra):
        """Register a subnet (and its network if unknown); return it."""
        subnet_id = subnet_id or str(uuid.uuid4())
        net = ipaddress.ip_network(cidr, strict=False)
        ip_version = ip_version or net.version
        if ip_version != net.version:
            raise ValueError(f"{cidr} is not an IPv{ip_version} prefix")
        hosts = list(_first_hosts(net, 2))
        if gateway_ip is None:
            gateway_ip = str(hosts[0])
        pool_start = hosts[-1]
        pool_end = (net.broadcast_address - 1 if net.version == 4
                    and net.num_addresses > 2 else net[-1])
        network_id = network_id or str(uuid.uuid4())
        with self._lock:
            known = network_id in self._data["networks"]
        if not known:
            self.add_network(network_id)
        sub = {"id": subnet_id, "name": name or f"subnet-{subnet_id[:8]}",
               "network_id": network_id, "cidr": str(net),
               "ip_version": ip_version, "gateway_ip": gateway_ip,
               "enable_dhcp": False, "tenant_id": self.project_id,
               "project_id": self.project_id,
               "allocation_pools": [{"start": str(pool_start),
                                     "end": str(max(pool_end, pool_start))}],
               "host_routes": [], "dns_nameservers": [], "tags": [],
               "description": "", "subnetpool_id": None,
               "ipv6_address_mode": None, "ipv6_ra_mode": None,
               "segment_id": None, "service_types": []}
        sub.update(extra)
        with self._lock:
            self._data["subnets"][subnet_id] = sub
            subs = self._data["networks"][network_id]["subnets"]
            if subnet_id not in subs:
                subs.append(subnet_id)
        return dict(sub)

    def add_port(self, port_id=None, network_id=None, fixed_ips=(), name="",
                 **extra):
        """fixed_ips: [{'subnet_id': ..., 'ip_address': ...}, ...]."""
        port_id = port_id or str(uuid.uuid4())
        fixed_ips = [dict(f) for f in fixed_ips]
        if network_id is None and fixed_ips:
            with self._lock:
                sub = self._data["subnets"].get(fixed_ips[0].get("subnet_id"))
            network_id = sub["network_id"] if sub else None
        if network_id is None:
            raise ValueError("add_port needs network_id or a known subnet")
        port = {"id": port_id, "name": name, "network_id": network_id,
                "fixed_ips": fixed_ips, "admin_state_up": True,
                "status": "ACTIVE", "mac_address": "fa:16:3e:00:00:01",
                "device_id": "", "device_owner": "",
                "tenant_id": self.project_id, "project_id": self.project_id,
                "security_groups": [], "allowed_address_pairs": [],
                "tags": [], "description": ""}
        port.update(extra)
        with self._lock:
            self._data["ports"][port_id] = port
        return dict(port)

    def remove(self, collection, resource_id):
        with self._lock:
            return self._data[collection].pop(resource_id, None) is not None

    def list(self, collection):
        with self._lock:
            return [dict(r) for r in self._data[collection].values()]

    # -- WSGI ---------------------------------------------------------------
    def _versions(self, base):
        return {"versions": [{"id": "v2.0", "status": "CURRENT",
                              "links": [{"href": f"{base}/v2.0/",
                                         "rel": "self"}]}]}

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/").rstrip("/")
        parts = [p for p in path.split("/") if p]
        base = f"http://{environ.get('HTTP_HOST') or environ['SERVER_NAME']}"
        if method != "GET":
            return _reply(start_response, 405, _err(
                "HTTPMethodNotAllowed", "the Neutron stub is read-only"))
        if not parts:
            return _reply(start_response, 200, self._versions(base))
        if parts[0] != "v2.0":
            return _reply(start_response, 404, _err("HTTPNotFound", path))
        if len(parts) == 1:
            links = [{"name": c, "collection": c,
                      "links": [{"href": f"{base}/v2.0/{c}", "rel": "self"}]}
                     for c in COLLECTIONS]
            return _reply(start_response, 200, {"resources": links})
        coll = parts[1]
        if coll.endswith(".json"):
            coll = coll[:-5]
        if coll == "extensions" and len(parts) == 2:
            return _reply(start_response, 200, {"extensions": []})
        if coll not in COLLECTIONS or len(parts) > 3:
            return _reply(start_response, 404, _err("HTTPNotFound", path))
        query = parse_qs(environ.get("QUERY_STRING", ""),
                         keep_blank_values=True)
        fields = query.pop("fields", None)
        for k in ("limit", "marker", "page_reverse", "sort_key", "sort_dir"):
            query.pop(k, None)
        singular = COLLECTIONS[coll]
        with self._lock:
            items = [dict(r) for r in self._data[coll].values()]
        if len(parts) == 3:
            rid = parts[2][:-5] if parts[2].endswith(".json") else parts[2]
            match = [r for r in items if r["id"] == rid]
            if not match:
                kind = singular.capitalize()
                return _reply(start_response, 404, _err(
                    f"{kind}NotFound", f"{kind} {rid} could not be found."))
            return _reply(start_response, 200,
                          {singular: _fields(match[0], fields)})
        for key, wanted in query.items():
            items = [r for r in items if _matches(r.get(key), wanted)]
        return _reply(start_response, 200,
                      {coll: [_fields(r, fields) for r in items]})

    # -- server -------------------------------------------------------------
    @property
    def url(self):
        if self._server is None:
            raise RuntimeError("NeutronStub not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self):
        if self._server is not None:
            return self
        self._server = make_server(self.host, self.port, self,
                                   server_class=_ThreadingServer,
                                   handler_class=_Quiet)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name="neutron-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None


def _first_hosts(net, n):
    """The first n usable addresses (fewer only for tiny prefixes)."""
    out = []
    for addr in (net.hosts() if net.num_addresses > 2 else iter(net)):
        out.append(addr)
        if len(out) == n:
            break
    return out or [net.network_address]


def _matches(value, wanted):
    if isinstance(value, bool):
        return str(value).lower() in [w.lower() for w in wanted]
    if isinstance(value, list):
        return any(str(w) in [str(v) for v in value] for w in wanted)
    return str(value) in wanted if value is not None else "" in wanted


def _fields(item, fields):
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def _err(kind, message):
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


def _reply(start_response, code, body):
    data = json.dumps(body).encode()
    start_response(f"{code} {_REASONS[code]}",
                   [("Content-Type", "application/json"),
                    ("Content-Length", str(len(data)))])
    return [data]
