"""Faults injected into the real components of the agent's tests."""


def fail_first_call(monkeypatch, obj, name, exc):
    """obj.name raises exc on its first call, then behaves as before."""
    real = getattr(obj, name)
    calls = []

    def once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise exc
        return real(*args, **kwargs)
    monkeypatch.setattr(obj, name, once)
