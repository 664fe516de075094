import pytest


@pytest.fixture
def cert_storage(tmp_path):
    """Octavia's local certificate manager ([certificates] storage_path of
    the global configuration, which Octavia's drivers read) pointed at a
    temporary directory for one test."""
    from oslo_config import cfg

    from amphora_agent.l7 import certs
    certs.register_octavia_opts()
    path = tmp_path / 'cert-storage'
    path.mkdir()
    cfg.CONF.set_override('storage_path', str(path), group='certificates')
    yield path
    cfg.CONF.clear_override('storage_path', group='certificates')
