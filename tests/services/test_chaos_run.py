"""The small chaos run (issue 16), in `make test`: the very code of `make chaos`
(``chaos.run``) with a few hundred orders and each fault once: relays, workers and web
replicas SIGKILLed, the broker's node and then the whole broker SIGKILLed and restarted,
PostgreSQL restarted, the payment provider out and then slow, half the WebSocket clients
dropped. Every invariant must hold: nothing lost or duplicated, no double effect, nothing
oversold, every saga over within 60 s of the last fault, the read models equal to their
rebuild and to what every WebSocket client shows, every webhook delivered.

It runs its own deployment (its own servers, in its own xdist group): killing the broker
or restarting the database would break whatever else shared them. The seed is fixed so a
failure repeats (``python -m chaos --quick --seed <seed>``); WAYBILL_CHAOS_SEED tries
another."""

from __future__ import annotations

import json
import os
import time

import pytest

from chaos.report import markdown, write
from chaos.run import INVARIANT_KEYS, Plan, run

pytestmark = pytest.mark.xdist_group("chaos")

SEED = int(os.environ.get("WAYBILL_CHAOS_SEED", "16"))
# Measured on the 2-core machine beside other test runs: 300 orders took 3 min 14 s on the
# three-node cluster (about 55 s to start it all, 100 s of load with nine faults, 30 s of
# checks and a rebuild); 240 keep the whole test near 3 to 4 minutes, and still give each fault
# a slot of its own (about 7 s) with the load running through it.
ORDERS, RATE = 240, 3.0


def test_a_small_chaos_run_loses_nothing_duplicates_nothing_and_converges(launcher_packages, tmp_path):
    began = time.monotonic()
    results = run(Plan.of(quick=True, orders=ORDERS, rate=RATE, seed=SEED), workdir=tmp_path / "deployment",
                  log=lambda line: print(line, flush=True))
    path = write(results, tmp_path / "results")
    print(f"chaos results: {path} ({time.monotonic() - began:.0f} s)")
    failed = {name: value for name, value in results["invariants"].items() if value}
    # The report first, its circumstances (load, figures, each fault and its backlog) ahead of
    # what failed: CI's excerpt of the output is short.
    assert not failed, f"invariants failed: {failed}\n{markdown(results, chart=None)}"
    # The file written holds the invariants at its top level, beside the figures.
    written = json.loads(path.read_text())
    assert written["passed"] and all(written[key] == 0 for key in INVARIANT_KEYS), written
    assert {"orders", "seed", "figures", "faults"} <= written.keys()

    # The run did what makes its checks mean something: every fault happened, some orders
    # were rejected (stock ran out, a payment was declined), some cancelled and refunded,
    # and the WebSocket clients lost their connections and came back.
    assert [fault["kind"] for fault in results["faults"] if fault["began_s"] is not None and not fault["error"]] == [
        fault["kind"] for fault in results["faults"]] and len(results["faults"]) == 9
    outcomes = results["figures"]["outcomes"]
    assert outcomes.get("CONFIRMED", 0) > ORDERS / 2 and outcomes.get("REJECTED", 0) > 0, outcomes
    assert outcomes.get("CANCELLED", 0) > 0 and results["figures"]["refunds"]["refunds_of_cancelled_orders"] > 0
    # Stock ran short: reservations were refused (whatever later released units back; a
    # product sold out at the end depended on how many deadlines the machine's speed let pass).
    assert results["figures"]["reservations_refused_for_stock"] > 0, results["figures"]["stock"]
    sockets = results["figures"]["websockets"]
    assert sockets["connects"] > sockets["clients"] and sockets["connected_at_end"] == sockets["clients"], sockets
    assert results["figures"]["webhooks"]["events"] >= results["accepted"]
