"""The tempest stage (`make test-tempest`): its own virtualenv, tempest.conf
and the run's summary.  The lab bring-up that uses these lives in
tests/functional/e2e/tempest_gate.py (it needs the lab kit under tests/)."""
