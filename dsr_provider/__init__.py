"""Octavia provider driver ``dsr`` and its controller.

driver.py       DSRProviderDriver, loaded by octavia-api (octavia.api.drivers)
validation.py   what the DSR dataplane can honour, as refusals naming the field
flavors.py      flavor / availability zone metadata schema, SE group choice
payloads.py     octavia-lib data models -> plain dicts for the RPC casts
rpc_api.py      ControllerAPI: the casts to dsr-controller (API 1.0)
octavia_lookup.py  reads from octavia-driver-agent's get socket
vip_port.py     VIP port allocation in Neutron (openstacksdk), optional
opts.py         [dsr_provider] options
controller/     dsr-controller service
"""
