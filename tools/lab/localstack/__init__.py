"""Local stand-ins for the services octavia-dsr talks to, for tests and demos.

* octavia.OctaviaStack  - a real Octavia API + driver agent (noauth, noop
  network/compute drivers) on a private MariaDB database, with a Neutron stub;
* neutron_stub.NeutronStub - read-only Neutron look-ups for the CLI/SDK;
* services.ensure(...)  - start MariaDB / Redis / RabbitMQ unless they answer.

Nothing is imported here:
`from tools.lab.localstack.octavia import OctaviaStack`.
"""
