"""The cert-fetch hook: TLS material of a TERMINATED_HTTPS listener by its
container reference.

The L7 document carries references only.  This store reads
``<cert_dir>/<last component of the reference>.pem`` (certificate, chain
and private key in one PEM file, as Octavia's local certificate manager
keeps them); castellan/Barbican is a later store with the same ``fetch``.
"""

import os

from amphora_agent.l7 import render


class CertError(RuntimeError):
    pass


class LocalStore:
    def __init__(self, cert_dir):
        self.cert_dir = cert_dir

    def path(self, ref):
        return os.path.join(self.cert_dir, render.cert_name(ref) + '.pem')

    def fetch(self, ref):
        """The PEM bytes of ``ref``; CertError names the reference, the
        file and what is missing."""
        path = self.path(ref)
        try:
            with open(path, 'rb') as f:
                pem = f.read()
        except OSError as exc:
            raise CertError(f'certificate {ref!r}: cannot read {path} '
                            f'({exc.strerror})') from None
        missing = [what for what, marker in (
            ('a certificate', b'-----BEGIN CERTIFICATE-----'),
            ('a private key', b'PRIVATE KEY-----')) if marker not in pem]
        if missing:
            raise CertError(f'certificate {ref!r}: {path} holds no '
                            f'{" and no ".join(missing)} (allowed: one PEM '
                            'file with the certificate, its chain and the '
                            'unencrypted private key)')
        return pem
