"""The chaos run repeats from its printed seed: the committed full run's fault schedule
(docs/chaos/results.json) is drawn again from its seed, by the very code `make chaos` runs
(``chaos.run.drawn``), without a deployment. A change to what the run draws, or in which
order, fails here, and then the committed results no longer say how to repeat them."""

from __future__ import annotations

import json
import random

from chaos.run import Plan, drawn
from chaos.topology import LAYOUT, Topology
from launcher.deployment import processes
from launcher.stack import REPO

RESULTS = REPO / "docs" / "chaos" / "results.json"
# What a fault's plan is; the rest of a recorded fault is what happened when it was done.
PLANNED = ("at_s", "kind", "target", "duration_s")


def _drawn(plan: Plan):
    """The orders and faults of ``plan`` on the layout at scale. Only the counts of what the
    schedule picks from are needed: the processes by kind, the broker nodes, the database
    servers; the customers are placeholders, since an order draws only which one places it."""
    kinds = {p.name: p.kind for p in processes(replicas=LAYOUT.replicas)}
    topology = Topology(deployment=None, postgres=[None] * len(LAYOUT.database_server_names), broker=None,
                        broker_nodes=[None] * LAYOUT.broker_nodes, redis=None, layout=LAYOUT, kinds=kinds)
    return drawn(plan, random.Random(plan.seed), topology, [None] * plan.customers, base_url="")


def test_the_committed_run_is_drawn_again_from_its_seed():
    recorded = json.loads(RESULTS.read_text())
    plan = Plan(**recorded["plan"])
    assert recorded["seed"] == plan.seed
    # The layout it ran on is still the layout at scale.
    assert recorded["topology"]["processes"] == {p.name: p.kind for p in processes(replicas=LAYOUT.replicas)}
    assert recorded["topology"]["broker_nodes"] == LAYOUT.broker_nodes
    assert recorded["topology"]["postgres_servers"] == len(LAYOUT.database_server_names)

    load, faults = _drawn(plan)
    assert len(load.placed) == recorded["orders"]
    assert [{key: getattr(fault, key) for key in PLANNED} for fault in faults] == [
        {key: fault[key] for key in PLANNED} for fault in recorded["faults"]]


def test_one_seed_draws_one_run_and_another_seed_another():
    plan = Plan.of(quick=True, orders=240, rate=3.0, seed=16)
    first, again = _drawn(plan), _drawn(plan)
    assert [f.describe() for f in first[1]] == [f.describe() for f in again[1]]
    assert [(o.key, o.lines, o.customer, o.cancel) for o in first[0].placed] == [
        (o.key, o.lines, o.customer, o.cancel) for o in again[0].placed]
    other = _drawn(Plan.of(quick=True, orders=240, rate=3.0, seed=17))
    assert [f.describe() for f in other[1]] != [f.describe() for f in first[1]]
    # The small run does each kind of fault once.
    assert sorted(f.kind for f in first[1]) == sorted({f.kind for f in first[1]})
