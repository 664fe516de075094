"""amphora_agent.l7.certs: certificates by reference through Octavia's
certificate manager drivers (the boundary: a temporary storage directory
of Octavia's local certificate manager)."""

import os

from cryptography.hazmat.primitives import serialization
from cryptography import x509
import pytest

from amphora_agent.l7 import certs
from tests.unit.amphora_agent.l7 import tls


def blocks(pem):
    return [b'-----BEGIN' + b for b in pem.split(b'-----BEGIN')[1:]]


def test_fetch_joins_certificate_key_and_intermediates(cert_storage):
    pem = tls.self_signed_pem('www.example.com')
    inter = tls.split(tls.self_signed_pem('ca.example.com'))[0]
    ref = tls.store(pem, intermediates=inter)
    out = certs.OctaviaStore('local_cert_manager').fetch(ref)
    cert, key = tls.split(pem)
    # build_pem's order (the amphora's): certificate, key, chain.
    got = blocks(out)
    assert len(got) == 3
    assert x509.load_pem_x509_certificate(got[0]) == \
        x509.load_pem_x509_certificate(cert)
    assert b'PRIVATE KEY' in got[1]
    assert x509.load_pem_x509_certificate(got[2]) == \
        x509.load_pem_x509_certificate(inter)


def test_a_key_with_a_passphrase_comes_out_unencrypted(cert_storage):
    # HAProxy cannot ask for a passphrase: Octavia's parser decrypts.
    pem = tls.self_signed_pem()
    cert, key = tls.split(pem)
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b'secret'))
    ref = tls.store(cert + encrypted, passphrase=b'secret')
    out = certs.OctaviaStore('local_cert_manager').fetch(ref)
    assert b'ENCRYPTED' not in out
    key_out = [b for b in blocks(out) if b'PRIVATE KEY' in b][0]
    assert serialization.load_pem_private_key(key_out, None) \
        .private_numbers() == serialization.load_pem_private_key(
            key, None).private_numbers()


def test_a_missing_reference_is_named_with_the_file(cert_storage):
    store = certs.OctaviaStore('local_cert_manager')
    with pytest.raises(certs.CertError) as exc:
        store.fetch('nope')
    msg = str(exc.value)
    assert msg.startswith("certificate 'nope': cannot be loaded with "
                          'local_cert_manager'), msg
    assert os.path.join(str(cert_storage), 'nope.crt') in msg


def test_a_certificate_without_its_key_is_refused(cert_storage):
    ref = tls.store(tls.self_signed_pem())
    os.unlink(cert_storage / f'{ref}.key')
    with pytest.raises(certs.CertError, match=f"certificate '{ref}'.*"
                       'Private Key could not be read'):
        certs.OctaviaStore('local_cert_manager').fetch(ref)


def test_an_unreadable_certificate_is_refused(cert_storage):
    ref = tls.store(tls.self_signed_pem())
    (cert_storage / f'{ref}.crt').write_text('not a certificate')
    with pytest.raises(certs.CertError, match=f"certificate '{ref}'"):
        certs.OctaviaStore('local_cert_manager').fetch(ref)


def test_an_unknown_driver_names_the_option_and_the_drivers():
    with pytest.raises(ValueError) as exc:
        certs.OctaviaStore('vault')
    msg = str(exc.value)
    assert "[l7] cert_manager 'vault' cannot be loaded" in msg
    for name in ('local_cert_manager', 'barbican_cert_manager',
                 'castellan_cert_manager'):
        assert name in msg


def test_a_store_on_first_fetch_is_built_then_once(cert_storage):
    built = []

    def factory():
        built.append(1)
        return certs.OctaviaStore('local_cert_manager')

    store = certs.OnFirstFetch(factory)
    assert built == []
    pem = tls.self_signed_pem('www.example.com')
    ref = tls.store(pem)
    assert b'PRIVATE KEY' in store.fetch(ref)
    store.fetch(ref)
    assert built == [1]


def test_a_store_on_first_fetch_with_a_bad_driver_names_the_option():
    store = certs.OnFirstFetch(lambda: certs.OctaviaStore('no_such_driver'))
    with pytest.raises(ValueError, match=r"\[l7\] cert_manager "
                                         r"'no_such_driver'.*allowed: .*"
                                         r"local_cert_manager"):
        store.fetch('ref')
