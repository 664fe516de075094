"""The tempest stage (`make test-tempest`): its own virtualenv, tempest.conf,
the run's summary, and the bring-up that drives the lab kit (gate.py)."""
