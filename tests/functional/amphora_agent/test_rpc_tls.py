"""Confidentiality on the wire: the agent <-> controller RPC over
oslo.messaging's RabbitMQ driver with TLS ([oslo_messaging_rabbit] ssl,
ssl_ca_file) to a private broker with a TLS listener, certificates from a
throwaway CA.  A plain AMQP client on the TLS port gets nowhere."""

import datetime
import ipaddress
import os
import tempfile

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID
import kombu
from oslo_config import cfg
import pytest

from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from tools.lab import agent_lab
from tools.lab.localstack import private_services as ps
from tools.lab.localstack import services
from tools.lab import netns


def _write_private(path, key):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _cert(subject, issuer, public_key, signing_key, ca, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                              critical=True))
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_pki(directory):
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            'dsr test CA')])
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')])
    cert = _cert(name, ca_name, key.public_key(), ca_key, ca=False,
                 sans=(x509.DNSName('localhost'),
                       x509.IPAddress(ipaddress.ip_address('127.0.0.1'))))
    paths = {'cacertfile': os.path.join(directory, 'ca.pem'),
             'certfile': os.path.join(directory, 'server.pem'),
             'keyfile': os.path.join(directory, 'server.key')}
    for path, c in ((paths['cacertfile'], ca), (paths['certfile'], cert)):
        with open(path, 'wb') as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
    _write_private(paths['keyfile'], key)
    return paths


@pytest.fixture
def tls_broker():
    with tempfile.TemporaryDirectory(prefix='rabbit-tls-') as d:
        pki = make_pki(d)
        with ps.RabbitMQ(tls=pki) as rabbit:
            yield rabbit, pki


@pytest.fixture
def tls_transport(tls_broker):
    rabbit, pki = tls_broker
    # oslo.messaging reads these from the global CONF (FIELD-NOTES).
    transport = rpc.get_transport(cfg.CONF, url=rabbit.tls_url)
    cfg.CONF.set_override('ssl', True, group='oslo_messaging_rabbit')
    cfg.CONF.set_override('ssl_ca_file', pki['cacertfile'],
                          group='oslo_messaging_rabbit')
    try:
        yield transport
    finally:
        transport.cleanup()
        cfg.CONF.clear_override('ssl', group='oslo_messaging_rabbit')
        cfg.CONF.clear_override('ssl_ca_file', group='oslo_messaging_rabbit')


def test_agent_controller_rpc_over_tls(tls_transport, tmp_path):
    ctl_key, se_key = str(tmp_path / 'ctl.key'), str(tmp_path / 'se.key')
    auth.generate_key(ctl_key)
    auth.generate_key(se_key)
    controller = agent_lab.FakeController(tls_transport, 'ctl-tls',
                                          auth.Signer(ctl_key))
    controller.snapshot = {'schema_version': 1, 'se_group': 'g-tls',
                           'generation': 7, 'load_balancers': []}
    controller.start()
    try:
        client = rpc.ControllerClient(tls_transport, timeout=20,
                                      signer=auth.Signer(se_key))
        answer = client.get_config('g-tls', 'se-tls')
        assert '"generation":7' in answer['payload']
        client.report_state('se-tls', 'g-tls', {'applied_generation': 7})
        netns.wait_for(lambda: controller.states.get('se-tls'), 10,
                       'report_state over TLS')
        # That port speaks only TLS (the test below): the RPC above went
        # over TLS.
    finally:
        controller.stop()


def test_plain_amqp_to_the_tls_port_fails(tls_broker):
    rabbit, _pki = tls_broker
    # The plain port answers the AMQP header; the TLS port does not.
    assert services.rabbitmq_answers(rabbit.port)
    assert not services.rabbitmq_answers(rabbit.tls_port)
    conn = kombu.Connection(rabbit.tls_url.replace('rabbit://', 'amqp://'),
                            connect_timeout=3)
    with pytest.raises(Exception):
        conn.ensure_connection(max_retries=1)
    conn.release()
