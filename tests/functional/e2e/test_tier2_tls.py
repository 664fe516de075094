"""Tier 2 TERMINATED_HTTPS through the real product: octavia-api with
Octavia's local certificate manager ([certificates] cert_manager =
local_cert_manager), the `openstack` CLI, dsr-controller, two L4 SE
agents and two L7 SE agents that fetch the certificates themselves by
their container references from the same storage (tools/lab/l7_ses.py),
in front of plain HTTP servers.

    client -- router -- se1, se2     L4 SEs: VIP -> Maglev -> IPIP
                   |---- m1, m2      L7 SEs (HAProxy terminates TLS, SNAT)
                   |---- m3, m4      plain HTTP servers :8080

A test CA signs two server certificates (www.example.test, the default
container; api.example.test, an SNI container), stored with Octavia's
LocalCertManager.store_cert.  HTTPS requests through the VIP are verified
against the CA for the server name they ask for; the servers see only the
L7 SEs' addresses; every object ends ACTIVE/ONLINE.  A reference the
store does not hold is refused by octavia-api, naming it.  No key
material reaches the controller (only the references).
"""

import datetime
import json

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID
from oslo_config import cfg
import pytest

from amphora_agent.l7 import certs
from tests.functional.e2e import helpers as h
from tools.lab import netns
from tools.lab import product_lab as pl

VIP = netns.VIP4
L7, SERVERS = ('m1', 'm2'), ('m3', 'm4')
WEB_PORT = 8080
NAMES = ('www.example.test', 'api.example.test')

# One HTTPS GET from the client: the CA file and the server name (SNI and
# hostname check); prints [status, body, TLS version, certificate CN].
HTTPS_GET = '''
import json, socket, ssl, sys
vip, ca, name = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((vip, 443), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(f"GET / HTTP/1.1\\r\\nHost: {name}\\r\\n"
                  "Connection: close\\r\\n\\r\\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        cn = [v for ((k, v),) in s.getpeercert()["subject"]
              if k == "commonName"][0]
        head, _, body = data.decode().partition("\\r\\n\\r\\n")
        print(json.dumps([int(head.split()[1]), body, s.version(), cn]))
'''


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject_key, cn, issuer_key=None, issuer=None, ca=False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(issuer or name)
               .public_key(subject_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                              critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    with h.tier2_product(L7, SERVERS, WEB_PORT) as lab:
        lab.tls_dir = tmp_path_factory.mktemp('tls')
        yield lab


def store_certificates(lab):
    """A test CA and one server certificate per name, stored with
    Octavia's LocalCertManager in octavia-api's storage; ({name: ref},
    CA file)."""
    from octavia.certificates.manager import local
    ca_key = _key()
    ca = _cert(ca_key, 'DSR test CA', ca=True)
    ca_file = lab.tls_dir / 'ca.pem'
    ca_file.write_bytes(_pem(ca))
    certs.register_octavia_opts()
    cfg.CONF.set_override('storage_path', str(lab.stack.cert_storage_path),
                          group='certificates')
    refs = {}
    try:
        for name in NAMES:
            key = _key()
            leaf = _cert(key, name, ca_key, ca.subject)
            refs[name] = local.LocalCertManager.store_cert(
                None, _pem(leaf), _pem(key))
    finally:
        cfg.CONF.clear_override('storage_path', group='certificates')
    return refs, str(ca_file)


def https_get(lab, ca_file, name):
    out = lab.topo.run('client', [*netns.SCRIPT_PYTHON, '-c', HTTPS_GET,
                                  VIP, ca_file, name]).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(900)  # the two-tier lab took 4 min to start at load 20
def test_terminated_https_through_the_product(lab):
    topo = lab.topo
    addr = {n: topo.host(n).ipv4 for n in L7 + SERVERS}
    refs, ca_file = store_certificates(lab)
    www, api = refs[NAMES[0]], refs[NAMES[1]]

    h.tier2_flavor(lab)
    h.act(lab, 'create', '--name', 'lb', '--provider', 'dsr', '--flavor',
          'tier2', '--vip-subnet-id', pl.VIP_SUBNET, '--vip-address', VIP,
          timeout=60)
    # A reference the certificate store does not hold: octavia-api
    # validates it and refuses, naming it; nothing is created.
    bogus = 'f00dbabe-0000-4000-8000-00000000dead'
    err = h.refused(lab, 'loadbalancer', 'listener', 'create', '--name',
                    'bad', '--protocol', 'TERMINATED_HTTPS',
                    '--protocol-port', '443', '--default-tls-container-ref',
                    bogus, 'lb')
    assert bogus in err, err
    assert [li['name'] for li in h.api(lab, 'listeners')['listeners']] \
        == []

    # (--sni-container-refs takes any number of values: not last.)
    h.act(lab, 'listener', 'create', '--name', 'tls', '--protocol',
          'TERMINATED_HTTPS', '--sni-container-refs', api,
          '--default-tls-container-ref', www, '--protocol-port', '443',
          'lb', timeout=60)
    h.http_pool(lab, 'p-web', ('--listener', 'tls'), WEB_PORT,
                {name: addr[name] for name in SERVERS})

    # Only the references crossed the message bus (octavia-api hands the
    # provider the PEM data too): the listener as the controller received
    # it, which its L7 snapshot is built from, names them and holds no
    # certificate or key.
    stored = lab.mysql(f'SELECT doc FROM {lab.controller_db}.listeners')
    assert stored.returncode == 0, stored.stderr
    assert www in stored.stdout and api in stored.stdout, stored.stdout
    assert 'BEGIN' not in stored.stdout, stored.stdout
    assert 'container_data' not in stored.stdout, stored.stdout

    # HTTPS through the VIP, verified against the test CA for each name:
    # the default certificate for www, the SNI one for api; both servers
    # answer; they see the L7 SEs' addresses only (SNAT).
    at_server = {(srv, src): topo.nft_counter(srv, saddr=src)
                 for srv in SERVERS
                 for src in (addr['m1'], addr['m2'], topo.client.ipv4)}
    served = set()

    def both_served():
        status, body, version, cn = https_get(lab, ca_file, NAMES[0])
        assert (status, cn) == (200, NAMES[0]), (status, body, cn)
        assert version.startswith('TLSv1.'), version
        served.add(h.member_of(body))
        return served == set(SERVERS)
    netns.wait_for(both_served, 60, 'HTTPS served by both servers',
                   interval=0.1)
    status, body, version, cn = https_get(lab, ca_file, NAMES[1])
    assert (status, cn) == (200, NAMES[1]), (status, body, cn)
    for srv in SERVERS:
        assert at_server[(srv, topo.client.ipv4)].packets() == 0, srv
    assert sum(at_server[(srv, addr[l7se])].packets()
               for srv in SERVERS for l7se in L7) > 0

    # Every object ACTIVE and ONLINE in Octavia.
    h.wait_all_online(lab)
