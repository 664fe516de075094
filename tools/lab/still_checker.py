"""A health checker that never probes: the interface UdpService and the
agents use (set_targets, start, stop, statuses), with the statuses set by
the caller (``current``) and changes delivered by calling the service's
callback.  For tests and benchmarks that exercise what a checker drives,
not the probes."""


class StillChecker:
    def __init__(self):
        self.targets, self.current = {}, {}

    def set_targets(self, targets, down=()):
        # down: the statuses are the caller's (current), not a probe's.
        self.targets = dict(targets)

    def start(self):
        pass

    def stop(self):
        pass

    def statuses(self):
        return dict(self.current)
