"""The Markdown table and PNG charts for docs/benchmarks/, from the results."""

from __future__ import annotations

from pathlib import Path

from .harness import RESULTS_DIR

RELAY_SYSTEMS = {
    "waybill": "Waybill relay (outbox, confirms)",
    "on_commit_delay": "on_commit + Celery delay()",
    "django_outbox_pattern": "django-outbox-pattern 3.2 (STOMP)",
    "raw_kombu": "raw Kombu publish loop, a confirm per message",
}

CONSUME_SYSTEMS = {
    "waybill": "Waybill's inventory worker (services mode)",
    "celery_task": "plain Celery task per message (acks_late, prefetch 1, solo pool)",
}


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _spread(entry: dict, key: str) -> str:
    runs = entry.get(f"{key}_runs") or []
    return f"{min(runs):,.0f}-{max(runs):,.0f}" if runs else "-"


def goal_lines(section: dict) -> list[str]:
    """A section's goals as computed by its scenario, each met or missed, with its figure."""
    goals = section.get("goals") or {}
    if not goals:
        return []
    lines = []
    for name, goal in goals.items():
        if isinstance(goal, dict):
            figures = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in goal.items() if k != "met")
            met = goal.get("met")
        else:
            figures, met = "", goal
        lines.append(f"- {name.replace('_', ' ')}: **{'met' if met else 'missed'}**" + (f" ({figures})" if figures else ""))
    return ["Goals:", "", *lines, ""]


def markdown(results: dict) -> str:
    m = results.get("machine", {})
    lines = [
        f"# Waybill benchmarks{' (quick smoke run)' if results.get('quick') else ''}",
        "",
        f"Last written {results.get('generated', '?')} on {m.get('cores', '?')} cores ({m.get('cpu', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, {m.get('os', '?')}, Python {m.get('python', '?')}, "
        f"{m.get('postgresql', '?')}, RabbitMQ {m.get('rabbitmq', '?')}. Reproduce with `make bench` "
        "(`make bench-quick` for a smoke run). Medians over repeats; spreads are min-max.",
        "",
    ]
    measured = results.get("measured", {})
    if measured:
        lines += ["Each scenario as last run: " + "; ".join(
            f"{name} {when['at']} (Python {when['python']})" for name, when in sorted(measured.items())) + ".", ""]
    relay = results.get("relay")
    if relay:
        lines += [f"## Outbox relay: draining a backlog of {_fmt(relay.get('backlog'))} messages to RabbitMQ", "",
                  "| system | events/s (median) | spread | commit-to-publish p50 / p99 ms | lost after SIGKILL |",
                  "|---|---:|---:|---:|---:|"]
        for key, label in RELAY_SYSTEMS.items():
            entry = relay.get(key) or {}
            latency = entry.get("commit_to_publish_ms") or {}
            lines.append(f"| {label} | {_fmt(entry.get('events_per_s'))} | {_spread(entry, 'events_per_s')} | "
                         f"{_fmt(latency.get('p50'), 1)} / {_fmt(latency.get('p99'), 1)} | {_fmt(entry.get('lost'))} |")
        pipelined = (relay.get("raw_kombu") or {}).get("pipelined_confirms") or {}
        if pipelined:
            lines.append(f"| raw Kombu publish loop, confirms awaited once per 500 (the wire's ceiling) | "
                         f"{_fmt(pipelined.get('events_per_s'))} | {_spread(pipelined, 'events_per_s')} | - | - |")
        goal = (relay.get("goals") or {}).get("waybill_at_least_0_55x_pipelined")
        if goal:
            lines += ["", f"Waybill's relay / pipelined confirms, same run: **{_fmt(goal.get('ratio'), 2)}x** "
                          f"(goal >= 0.55x with 0 lost: {'met' if goal.get('met') else 'missed'})."]
        lines += ["", relay.get("method", ""), ""]
    consume = results.get("consume")
    if consume:
        lines += [f"## Consumer: draining a backlog of {_fmt(consume.get('backlog'))} queued "
                  f"`{consume.get('message_type', '?')}` messages through {consume.get('context', '?')}'s consumer", "",
                  "| system | messages/s (median) | spread | backlog used | CPU ms per message: consumer + servers "
                  "= total |", "|---|---:|---:|---:|---:|"]
        for key, label in CONSUME_SYSTEMS.items():
            entry = consume.get(key) or {}
            lines.append(f"| {label} | {_fmt(entry.get('messages_per_s'))} | {_spread(entry, 'messages_per_s')} | "
                         f"{_fmt(entry.get('backlog_used'))} | {_fmt(entry.get('cpu_ms_per_message_consumer'), 2)} + "
                         f"{_fmt(entry.get('cpu_ms_per_message_servers'), 2)} = "
                         f"{_fmt(entry.get('cpu_ms_per_message'), 2)} |")
        goal = (consume.get("goals") or {}).get("waybill_at_least_5x_celery_task") or {}
        lines += ["", f"Waybill / plain Celery task: {_fmt(consume.get('ratio_waybill_to_celery_task'), 2)}x the "
                  f"messages per second (goal >= 5x: {'met' if goal.get('met') else 'not met'}); the Celery task "
                  f"spends {_fmt(consume.get('ratio_cpu_celery_task_to_waybill'), 2)}x Waybill's CPU per message.",
                  "", consume.get("method", ""), ""]
    pipeline = results.get("pipeline")
    if pipeline:
        lines += ["## Order pipeline: POST to the read model's final status, and POST to WebSocket push", "",
                  "| mode | orders/s at saturation | p50 / p95 / p99 ms at each fixed rate |", "|---|---:|---|"]
        for mode in ("services", "embedded"):
            entry = pipeline.get(mode) or {}
            rates = "; ".join(f"{rate}/s: {_fmt(v.get('p50'))} / {_fmt(v.get('p95'))} / {_fmt(v.get('p99'))}"
                              for rate, v in sorted((entry.get("rates") or {}).items(), key=lambda kv: float(kv[0])))
            lines.append(f"| {mode} | {_fmt(entry.get('orders_per_s'), 1)} | {rates or '-'} |")
        baseline = pipeline.get("sync_baseline") or {}
        lines += [f"| synchronous baseline (one request, one transaction, no messages) | "
                  f"{_fmt(baseline.get('orders_per_s'), 1)} | - |", "",
                  "CPU per order at saturation (ms, every process and server summed): "
                  + "; ".join(f"{mode} {_fmt((pipeline.get(mode) or {}).get('cpu_ms_per_order_total'), 1)}"
                              for mode in ("services", "embedded", "sync_baseline")) + ".", "",
                  f"Services / baseline: {_fmt(pipeline.get('ratio_services_to_sync'), 2)}; embedded / baseline: "
                  f"{_fmt(pipeline.get('ratio_embedded_to_sync'), 2)}. POST-to-push p99 at half the baseline's "
                  f"saturation ({_fmt(pipeline.get('half_baseline_rate'), 1)}/s): services "
                  f"{_fmt((pipeline.get('services') or {}).get('p99_post_to_push_ms_at_half_baseline'))} ms, "
                  f"embedded {_fmt((pipeline.get('embedded') or {}).get('p99_post_to_push_ms_at_half_baseline'))} ms.",
                  "", *goal_lines(pipeline), pipeline.get("method", ""), ""]
    memory = results.get("memory")
    if memory:
        lines += ["## Memory: peak RSS during the pipeline run (MiB)", "", "| process | MiB |", "|---|---:|"]
        for mode in ("services", "embedded"):
            for name, mib in (memory.get(mode) or {}).items():
                if isinstance(mib, float | int) and name != "samples":  # per-process detail is in the JSON
                    lines.append(f"| {mode}: {name} | {_fmt(mib, 0)} |")
        lines += ["", memory.get("method", ""), ""]
    ws = results.get("websocket")
    if ws:
        lines += ["## Live push: WebSocket clients on one ASGI process", "",
                  "| clients | commit-to-receipt p50 / p95 / p99 ms | broadcast p50 / p99 ms | missed a broadcast |",
                  "|---:|---:|---:|---:|",
                  f"| {_fmt(ws.get('clients'))} | {_fmt(ws.get('p50_ms'), 1)} / {_fmt(ws.get('p95_ms'), 1)} / "
                  f"{_fmt(ws.get('p99_ms'), 1)} | {_fmt((ws.get('broadcast_ms') or {}).get('p50'), 1)} / "
                  f"{_fmt((ws.get('broadcast_ms') or {}).get('p99'), 1)} | {_fmt(ws.get('missed'))} |",
                  "", ws.get("method", ""), ""]
    live = results.get("connections")
    if live:
        rss, refused = live.get("rss_mib") or {}, live.get("refused_past_the_limit") or {}
        lines += ["## Live connections: memory, and the limit", "",
                  "| WebSockets + SSE | RSS cold / before / peak / after MiB | after/before | after/cold "
                  "| refused past the limit (WS 4429, SSE 429) |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {_fmt(live.get('websockets'))} + {_fmt(live.get('sse_streams'))} | {_fmt(rss.get('cold'), 1)} / "
                  f"{_fmt(rss.get('before'), 1)} / {_fmt(rss.get('peak'), 1)} / {_fmt(rss.get('after'), 1)} | "
                  f"{_fmt(live.get('after_over_before'), 3)} | {_fmt(live.get('after_over_cold'), 3)} | "
                  f"{_fmt(refused.get('websockets_4429'))} + {_fmt(refused.get('sse_429'))} of "
                  f"{_fmt(live.get('tried_past_the_limit'))} + {_fmt(live.get('tried_past_the_limit'))} |",
                  "", live.get("method", ""), ""]
    rebuild = results.get("rebuild")
    if rebuild:
        goal = (rebuild.get("goals") or {}).get("rebuild_at_least_3x_live") or {}
        lines += [f"## Rebuild: {_fmt(rebuild.get('events'))} historical events replayed into the read models, "
                  "beside the live consumer", "",
                  "| consumer | events/s (median) | spread | CPU ms per event: consumer + servers = total |",
                  "|---|---:|---:|---:|"]
        for label, prefix in (("readmodels' live worker (services mode), draining its queue", "live_"),
                              ("`manage.py rebuild` (blue/green), from the history stream", "")):
            own, servers = rebuild.get(f"{prefix}cpu_ms_per_event"), rebuild.get(f"{prefix}servers_cpu_ms_per_event")
            total = own + servers if own is not None and servers is not None else None
            lines.append(f"| {label} | {_fmt(rebuild.get(f'{prefix}events_per_s'))} | "
                         f"{_spread(rebuild, f'{prefix}events_per_s')} | {_fmt(own, 2)} + {_fmt(servers, 2)} = "
                         f"{_fmt(total, 2)} |")
        lines += ["", f"Rebuild / live: **{_fmt(rebuild.get('ratio'), 2)}x** the events per second (goal "
                      f"{rebuild.get('goal', '>= 3x')}: {'met' if goal.get('met') else 'missed'}). The whole command "
                      f"(start-up, the green schema's migration and the switch included): "
                      f"{_fmt(rebuild.get('events_per_s_command'))} events/s, "
                      f"{_fmt(rebuild.get('ratio_command'), 2)}x the live rate, "
                      f"{_fmt(rebuild.get('cpu_ms_per_event_command'), 2)} ms of its CPU per event.",
                  "", rebuild.get("method", ""), ""]
    history = results.get("history")
    if history:
        lines += ["## Before and after", "", history.get("note", ""), "",
                  "| figure | before | after (this run) |", "|---|---:|---:|"]
        for row in history.get("rows", []):
            lines.append(f"| {row['figure']} | {_fmt(row['before'], 1)} | {_fmt(_lookup(results, row['after']), 1)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _lookup(results: dict, dotted: str):
    value = results
    for part in dotted.split("."):
        value = (value or {}).get(part) if isinstance(value, dict) else None
    return value


def charts(results: dict, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    written = []
    def bars(name: str, systems: dict[str, str], section: dict, figure: str, xlabel: str, title: str,
             size: tuple[float, float], **title_style) -> None:
        present = [key for key in systems if section.get(key)]
        fig, ax = plt.subplots(figsize=size)
        ax.barh([systems[key] for key in present], [section[key].get(figure) or 0 for key in present],
                color="#143d59")
        ax.set_xlabel(xlabel)
        ax.set_title(title, **title_style)
        ax.invert_yaxis()
        fig.tight_layout()
        written.append(directory / f"{name}.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    relay = results.get("relay")
    if relay:
        bars("relay", RELAY_SYSTEMS, relay, "events_per_s", "events per second (median)",
             f"Relaying a backlog of {relay.get('backlog', '?'):,} messages", (8, 3.5))
    consume = results.get("consume")
    if consume:
        used = [consume[key].get("backlog_used") or 0 for key in CONSUME_SYSTEMS if consume.get(key)]
        bars("consume", CONSUME_SYSTEMS, consume, "messages_per_s", "messages per second (median)",
             f"Draining a queued backlog ({min(used):,}-{max(used):,} messages a run)", (9, 2.5), fontsize=10)
    rebuild = results.get("rebuild")
    if rebuild:
        bars("rebuild", {"live": "readmodels' live worker", "rebuild": "manage.py rebuild"},
             {"live": {"events_per_s": rebuild.get("live_events_per_s")},
              "rebuild": {"events_per_s": rebuild.get("events_per_s")}}, "events_per_s",
             "events per second (median)",
             f"{rebuild.get('events', 0):,} events into the read models: live and rebuilt", (8, 2.2))
    pipeline = results.get("pipeline")
    if pipeline:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for mode, colour in (("services", "#143d59"), ("embedded", "#f4b41a")):
            rates = (pipeline.get(mode) or {}).get("rates") or {}
            if rates:
                xs = sorted(rates, key=float)
                ax.plot([float(x) for x in xs], [rates[x].get("p99") for x in xs], marker="o", color=colour,
                        label=f"{mode} p99")
                ax.plot([float(x) for x in xs], [rates[x].get("p50") for x in xs], marker=".", linestyle="--",
                        color=colour, label=f"{mode} p50")
        ax.set_xlabel("orders per second offered (open loop)")
        ax.set_ylabel("POST to WebSocket push (ms)")
        ax.legend()
        fig.tight_layout()
        written.append(directory / "pipeline.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_report(results: dict, *, quick: bool) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ("results-quick.md" if quick else "results.md")
    path.write_text(markdown(results))
    if not quick:
        charts(results, RESULTS_DIR)
    return path
