"""amphora_agent.l7.certs: the local certificate store."""

import pytest

from amphora_agent.l7 import certs
from tests.unit.amphora_agent.l7 import tls


def test_fetch_by_the_reference_last_component(tmp_path):
    pem = tls.self_signed_pem()
    (tmp_path / 'web.pem').write_bytes(pem)
    store = certs.LocalStore(str(tmp_path))
    assert store.fetch('https://kf.example/v1/containers/web') == pem
    assert store.fetch('web') == pem


def test_missing_file_names_the_reference_and_path(tmp_path):
    store = certs.LocalStore(str(tmp_path))
    with pytest.raises(certs.CertError) as exc:
        store.fetch('local:nope')
    assert "certificate 'local:nope': cannot read" in str(exc.value)
    assert str(tmp_path / 'nope.pem') in str(exc.value)


def test_a_file_without_key_is_refused(tmp_path):
    pem = tls.self_signed_pem()
    cert_only = pem[:pem.index(b'-----BEGIN PRIVATE KEY')]
    (tmp_path / 'web.pem').write_bytes(cert_only)
    with pytest.raises(certs.CertError, match='holds no a private key'):
        certs.LocalStore(str(tmp_path)).fetch('web')
