"""The cert-fetch hook: TLS material of a TERMINATED_HTTPS listener by its
container reference, through Octavia's certificate manager drivers.

The L7 document carries container references only -- never certificate or
key material (dsr_provider/payloads.py drops the ``*_container_data`` that
octavia-api adds).  The L7 SE fetches each reference itself, as Octavia's
amphora driver does: the driver named by ``[l7] cert_manager`` is loaded
from the stevedore namespace ``octavia.cert_manager`` (local_cert_manager,
barbican_cert_manager, castellan_cert_manager), the certificate is read
with Octavia's cert_parser (which also decrypts a key with a passphrase)
and joined into one PEM by cert_parser.build_pem (certificate, key,
intermediates), the form HAProxy's crt-list takes.

Octavia's drivers read their own options from the process's global
configuration, the agent's: ``[certificates]`` (storage_path for the local
manager; barbican_auth, region_name, endpoint_type, ca_certificates_file,
insecure for Barbican), ``[service_auth]`` (keystoneauth, as in
octavia.conf) and castellan's ``[key_manager]`` / ``[barbican]``.  They
are registered when the store is built (importing octavia.common.config),
so only the L7 agent pays for the import.
"""

import types

from amphora_agent.l7 import class_sources

CERT_MANAGER_NAMESPACE = 'octavia.cert_manager'


class CertError(RuntimeError):
    pass


def cert_managers():
    """The names of the installed certificate manager drivers."""
    from stevedore import extension
    return sorted(extension.ExtensionManager(
        CERT_MANAGER_NAMESPACE, invoke_on_load=False).names())


def register_octavia_opts():
    """Register the options Octavia's certificate managers read
    ([certificates], [service_auth]) on the global configuration."""
    with class_sources.cached():
        from octavia.certificates.common import local  # noqa: F401
        from octavia.common import config  # noqa: F401


def list_opts():
    """The options Octavia's certificate managers read, as Octavia
    declares them (registered by register_octavia_opts), for
    oslo-config-generator: its own namespace, since it needs octavia (the
    l7 extra) and the L4 agent's options must not."""
    from keystoneauth1 import loading as ks_loading
    from octavia.certificates.common import local
    from octavia.common import config
    read = ('barbican_auth', 'service_name', 'endpoint', 'region_name',
            'endpoint_type', 'ca_certificates_file', 'insecure')
    return [('certificates', [o for o in config.certificate_opts
                              if o.name in read] + local.certmgr_opts),
            ('service_auth', ks_loading.get_session_conf_options()
             + ks_loading.get_auth_common_conf_options()
             + ks_loading.get_auth_plugin_conf_options('password'))]


class OctaviaStore:
    """Certificates by reference through one of Octavia's certificate
    manager drivers."""

    def __init__(self, driver_name):
        from stevedore import driver
        register_octavia_opts()
        self.driver_name = driver_name
        try:
            self.manager = driver.DriverManager(
                namespace=CERT_MANAGER_NAMESPACE, name=driver_name,
                invoke_on_load=True).driver
        except Exception as exc:  # noqa: BLE001 -- stevedore and the
            # driver's own constructor (castellan, barbican auth) raise
            # anything; the option is what the operator must fix.
            raise ValueError(
                f'[l7] cert_manager {driver_name!r} cannot be loaded '
                f'({exc}); allowed: {", ".join(cert_managers())}') from None

    def fetch(self, ref, project_id=None):
        """The PEM bytes of ``ref`` (certificate, unencrypted key,
        intermediates); CertError names the reference, the driver and the
        cause."""
        from octavia.common.tls_utils import cert_parser
        from oslo_context import context
        # load_certificates_data is the amphora driver's path: it maps the
        # driver's Cert (decrypting the key) into a TLSContainer.
        holder = types.SimpleNamespace(tls_certificate_id=ref,
                                       sni_containers=(),
                                       project_id=project_id)
        try:
            data = cert_parser.load_certificates_data(
                self.manager, holder,
                context.RequestContext(project_id=project_id))
            return cert_parser.build_pem(data['tls_cert'])
        except Exception as exc:  # noqa: BLE001 -- any driver failure is
            # this load balancer's error, not the agent's.
            raise CertError(f'certificate {ref!r}: cannot be loaded with '
                            f'{self.driver_name} ({_reasons(exc)})') \
                from None


class OnFirstFetch:
    """A store built by ``factory`` when the first certificate is fetched.
    dsr-l7's stop and stats never fetch one, and building OctaviaStore
    imports Octavia's configuration (about 3 CPU-seconds).  The agent
    builds its store at start instead, so a wrong [l7] cert_manager stops
    it there; here the same error is the load balancer's that needs it."""

    def __init__(self, factory):
        self._factory = factory
        self._store = None

    def fetch(self, ref, project_id=None):
        if self._store is None:
            self._store = self._factory()
        return self._store.fetch(ref, project_id=project_id)


def _reasons(exc):
    """The causes under the driver's wrapper, innermost last (the local
    manager's OSError names the file)."""
    out, seen = [], set()
    cause = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause).strip() or type(cause).__name__
        if text not in out:
            out.append(text)
        cause = cause.__cause__ or cause.__context__
    return ': '.join(out)
