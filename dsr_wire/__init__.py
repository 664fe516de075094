"""What the provider driver, dsr-controller and the SE agents share, imported
by both sides so that each definition exists once.  Mostly the wire
contract:

    changes      driver -> controller change notifications (topic, methods)
    agent_rpc    controller <-> agent RPC API and its clients/endpoints
    schema       the snapshot document and its objects (jsonschema)
    membership   SE group membership (tooz)
    auth         message signing (Ed25519) and key files

and the one process contract both daemons keep towards systemd:

    daemon       cotyledon master/worker, SIGTERM/SIGHUP/READY semantics
"""
