"""A controller database restored from a backup: its SE groups' generations
went back below what the agents applied, and the agents refuse every older
generation (replay protection).  The group continues above what they
report applied, and no change stored since is reported ACTIVE before they
applied it."""

import logging

from dsr_provider.controller import models
from tests.unit.dsr_provider.controller.test_reporter import make
from tests.unit.dsr_provider.controller.test_reporter import reported
from tests.unit.dsr_provider.controller.test_store import graph


def member(n):
    return {'member_id': f'm{n}', 'pool_id': 'p1',
            'address': f'198.19.3.{n}', 'protocol_port': 80}


def restore(store, generation, agent_generations):
    """The backup's counters: the group's generation and the SEs' last
    reports as they were when it was taken."""
    with store.db.session() as s:
        s.get(models.SEGroup, 'g1').generation = generation
        s.get(models.SEGroup, 'g1').published_generation = generation
        for se_id, applied in agent_generations.items():
            s.get(models.AgentState, se_id).applied_generation = applied


def test_changes_after_a_restore_wait_for_the_agents(store, caplog):
    lib, reporter = make(store, {'se1', 'se2'})
    backup = store.create_loadbalancer(graph())
    for se in ('se1', 'se2'):
        store.record_agent(se, 'g1', applied_generation=backup)
    reporter.run_once()
    # Changes the backup does not have, applied by both SEs.
    for n in range(10, 13):
        latest = store.put_member(member(n))
    for se in ('se1', 'se2'):
        store.record_agent(se, 'g1', applied_generation=latest)
    reporter.run_once()
    assert latest > backup + 1

    restore(store, backup, {'se1': backup, 'se2': backup})
    # A change after the restore gets a generation both SEs report applied
    # (and will refuse when they fetch it).
    stale = store.put_member(member(20))
    assert stale <= latest
    with caplog.at_level(logging.WARNING):
        # The SEs' next heartbeats say what they run.
        assert store.record_agent('se1', 'g1', applied_generation=latest)
        store.record_agent('se2', 'g1', applied_generation=latest)
    assert caplog.text.count('above the group') == 1
    with store.db.session() as s:
        group = s.get(models.SEGroup, 'g1')
        assert group.generation == latest + 1
        assert group.published_generation < group.generation  # to publish
    reporter.run_once()
    assert reported(lib, 'members', 'm20') == []      # not applied yet
    # The SEs fetch and apply the group's new generation: now it is.
    for se in ('se1', 'se2'):
        store.record_agent(se, 'g1', applied_generation=latest + 1)
    reporter.run_once()
    assert reported(lib, 'members', 'm20') == ['ACTIVE']
    assert store.snapshot('g1')['generation'] == latest + 1


def test_a_heartbeat_at_the_groups_generation_changes_nothing(store):
    gen = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=gen)
    with store.db.session() as s:
        assert s.get(models.SEGroup, 'g1').generation == gen


def test_an_se_restarted_after_the_restore_is_caught_up_by_its_floor(store):
    """Restarted, an SE reports no applied generation until it applies
    one, and it refuses every snapshot below what it applied before (its
    floor, kept on disk): the floor it reports is where the group goes
    on from."""
    lib, reporter = make(store, {'se1'})
    backup = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=backup)
    for n in range(10, 13):
        latest = store.put_member(member(n))
    store.record_agent('se1', 'g1', applied_generation=latest)
    restore(store, backup, {'se1': backup})
    stale = store.put_member(member(20))
    assert stale <= latest
    # The SE restarted: nothing applied yet, its floor from before.
    store.record_agent('se1', 'g1', applied_generation=None,
                       generation_floor=latest)
    with store.db.session() as s:
        assert s.get(models.SEGroup, 'g1').generation == latest + 1
    reporter.run_once()
    assert reported(lib, 'members', 'm20') == []
    store.record_agent('se1', 'g1', applied_generation=latest + 1,
                       generation_floor=latest + 1)
    reporter.run_once()
    assert reported(lib, 'members', 'm20') == ['ACTIVE']


def test_a_generation_out_of_range_is_ignored(store):
    gen = store.create_loadbalancer(graph())
    for bogus in (2 ** 63, -5, True, 'x'):
        store.record_agent('se1', 'g1', applied_generation=gen,
                           generation_floor=bogus)
    with store.db.session() as s:
        assert s.get(models.SEGroup, 'g1').generation == gen


def test_after_a_catch_up_the_fleet_view_waits_for_the_new_generation(
        store):
    """dsr-status judges a load balancer by its last change's generation
    (LoadBalancer.changed_generation): after a catch-up the SEs run what
    the restored database does not hold, so every load balancer of the
    group is as desired only once they apply the new generation -- and
    one they refuse is listed, also after its status was sent."""
    from dsr_provider.cmd import status
    backup = store.create_loadbalancer(graph())
    store.record_agent('se1', 'g1', applied_generation=backup + 5)  # ahead
    with store.db.session() as s:
        caught_up = s.get(models.SEGroup, 'g1').generation
        assert s.get(models.LoadBalancer, 'lb1').changed_generation == \
            caught_up == backup + 6
    store.record_agent('se1', 'g1', applied_generation=backup + 5,
                       rejected_generation=caught_up)
    with store.db.session() as s:
        s.query(models.PendingStatus).delete()      # the verdicts were sent
    (group,) = status.fleet(store.db)['se_groups']
    (lb1,) = group['load_balancers_not_as_desired']
    assert lb1['reasons'] == [f'generation {caught_up} refused by se1']
    store.record_agent('se1', 'g1', applied_generation=caught_up)
    (group,) = status.fleet(store.db)['se_groups']
    assert group['load_balancers_not_as_desired'] == []


def test_a_catch_up_gives_no_generation_to_a_load_balancer_refused_whole(
        store):
    """Nothing runs a load balancer refused whole: a catch-up leaves it
    without a generation to wait for (it is listed for its refusal)."""
    backup = store.create_loadbalancer(graph())
    with store.db.session() as s:
        row = s.get(models.LoadBalancer, 'lb1')
        row.rejected, row.changed_generation = 'over capacity', None
    store.record_agent('se1', 'g1', applied_generation=backup + 5)
    with store.db.session() as s:
        assert s.get(models.SEGroup, 'g1').generation == backup + 6
        assert s.get(models.LoadBalancer, 'lb1').changed_generation is None
