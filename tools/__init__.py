"""Project tooling: the lab kit (tools.lab), the tempest gate (tools.tempest),
the demo and stack scripts.  Not installed; never imported by the product."""
