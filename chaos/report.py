"""docs/chaos/results.json, results.md and the timeline chart (faults and throughput over
time, matplotlib as bench's charts; only where it is installed: ``make chaos`` installs
the benchmark extras, the test run does not, and writes the JSON and Markdown alone)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import REPO, described

RESULTS_DIR = REPO / "docs" / "chaos"
QUICK_DIR = REPO / "var" / "chaos"  # a quick run never writes over the committed full results
CHART = "timeline.png"


def write(results: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    charted = chart(results, directory / CHART)
    (directory / "results.md").write_text(markdown(results, chart=CHART if charted else None))
    return path


def chart(results: dict, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    timeline = results["figures"]["timeline"]
    step = timeline["bucket_s"]
    xs = [i * step for i in range(len(timeline["outcomes_per_s"]))]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.step(xs, timeline["offered_per_s"], where="post", color="#9aa5b1", label="orders offered /s")
    ax.step(xs, timeline["outcomes_per_s"], where="post", color="#143d59", label="orders reaching their outcome /s")
    top = max([*timeline["outcomes_per_s"], *timeline["offered_per_s"], 1.0])
    for i, fault in enumerate(results["faults"]):
        began, ended = fault.get("began_s"), fault.get("ended_s")
        if began is None:
            continue
        ax.axvspan(began, max(ended or began, began + 0.5), color="#f4b41a" if not fault["error"] else "#d64545",
                   alpha=0.35)
        ax.text(began, top * (1.02 + 0.09 * (i % 3)), fault["kind"], fontsize=7, rotation=0)
    ax.set_ylim(0, top * 1.35)
    ax.set_xlabel("seconds since the load began")
    ax.set_ylabel("orders per second")
    ax.set_title(f"Chaos run: {results['orders']:,} orders at {results['rate']}/s, seed {results['seed']} "
                 f"(faults shaded)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _ms(value) -> str:
    return "-" if value is None or value != value else f"{value:,.0f}"


def _sagas_line(not_terminal: int, last_change_s: float | None) -> str:
    verdict = "every saga terminal" if not_terminal == 0 else f"{not_terminal} sagas not terminal in time"
    if last_change_s is None:
        return f"{verdict}; no saga changed after the last fault ended"
    return (f"{verdict}; the last saga change came {last_change_s} s after the last fault ended (the limit: 60 s "
            "after the last fault or order)")


def markdown(results: dict, *, chart: str | None) -> str:
    m, f, inv = results["machine"], results["figures"], results["invariants"]
    latency = f["post_to_final_ms"]
    lines = [
        f"# Chaos run{' (quick)' if results['quick'] else ''}: {'passed' if results['passed'] else 'FAILED'}",
        "",
        f"{results['date']} on {described(m)}; services mode with "
        f"{results['topology']['broker_nodes']} RabbitMQ node(s) and {results['topology']['postgres_servers']} "
        f"PostgreSQL server(s). Reproduce with `make chaos` "
        f"(`PYTHONPATH=platform:. .venv/bin/python -m chaos --orders {results['orders']} --rate {results['rate']} "
        f"--seed {results['seed']}{' --quick' if results['quick'] else ''}`). Load average at the end: "
        f"{', '.join(map(str, results['load_average']))}; the run took {results.get('duration_s', '?')} s.",
        "",
        "## Invariants",
        "",
        "| invariant | violations |",
        "|---|---:|",
        *[f"| {name.replace('_', ' ')} | {value}{'' if value == 0 else ' **(failed)**'} |"
          for name, value in inv.items()],
        "",
        "## Figures",
        "",
        f"- {results['accepted']:,} of {results['orders']:,} orders accepted from {results['customers']} customers; "
        f"outcomes {', '.join(f'{k} {v:,}' for k, v in f['outcomes'].items())}",
        f"- {f['orders_per_s']} orders/s reached their outcome (offered {f['offered_per_s']}/s); POST to outcome "
        f"p50 {_ms(latency.get('p50'))} ms, p99 {_ms(latency.get('p99'))} ms",
        "- messages redelivered by the broker (sampled, a lower bound): "
        f"{f.get('messages_redelivered_by_the_broker')}; "
        f"consumer retries (inbox): {f['inbox_retries']}; dead letters: {inv['dead_letters']}",
        f"- {_sagas_line(inv['sagas_not_terminal'], f.get('last_saga_change_after_last_fault_s'))}",
        f"- HTTP retries with the same Idempotency-Key: {f['http_retries'] or 'none'}",
        f"- reservations refused for want of stock: {f.get('reservations_refused_for_stock', '-')}",
        f"- cancellations: {f['cancel_requests']}; cancelled orders that had been charged "
        f"{f['refunds']['cancelled_orders_charged']}, refunds of them {f['refunds']['refunds_of_cancelled_orders']}",
        f"- webhooks: {f['webhooks']['events']} events owed, {f['webhooks']['requests']} requests received "
        f"({f['webhooks']['redelivered_requests']} repeats, deduplicated by id)",
        f"- WebSocket clients: {f.get('websockets')}",
        f"- read models rebuilt from the history in {f['rebuild_s']} s and compared row for row",
        "",
    ]
    if chart:
        lines += [f"![faults and throughput over time]({chart})", ""]
    lines += ["## Fault timeline", "",
              "| planned | began | ended | fault | target | note | next outcome after (s) "
              "| backlog cleared after (s) |",
              "|---:|---:|---:|---|---|---|---:|---:|"]
    for fault in results["faults"]:
        note = fault["error"] and f"**error**: {fault['error'][:120]}" or fault["note"]
        lines.append(f"| {fault['at_s']} | {fault.get('began_s')} | {fault.get('ended_s')} | {fault['kind']} | "
                     f"{fault['target']} | {note} | {fault.get('next_outcome_s')} | {fault.get('backlog_cleared_s')} |")
    failed = {name: results["details"].get(name) for name, value in inv.items() if value and name in results["details"]}
    if failed:
        lines += ["", "## What failed", "", "```json", json.dumps(failed, indent=2, default=str)[:6000], "```"]
    lines.append("")
    return "\n".join(lines)
