"""Test certificates: a self-signed one as one PEM (certificate + key),
and stored by reference with Octavia's local certificate manager (the
L7 engine's default driver) under a storage directory."""

import datetime

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID


def self_signed_pem(common_name='www.example.com'):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(common_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


def split(pem):
    """(certificate PEM, key PEM) of a self_signed_pem()."""
    i = pem.index(b'-----BEGIN', 1)
    return pem[:i], pem[i:]


def write_local(storage_path, ref, pem):
    """Store a PEM under ``ref`` in the file layout of Octavia's local
    certificate manager (<ref>.crt, <ref>.key), for a process whose
    configuration does not point at storage_path."""
    import os
    for suffix, data in zip(('.crt', '.key'), split(pem)):
        fd = os.open(os.path.join(storage_path, ref + suffix),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)


def store(pem, intermediates=None, passphrase=None):
    """Store a PEM with Octavia's LocalCertManager.store_cert; its
    reference."""
    from octavia.certificates.manager import local
    cert, key = split(pem)
    return local.LocalCertManager.store_cert(
        None, cert, key, intermediates=intermediates,
        private_key_passphrase=passphrase)
