"""What operators see of a process: its traces (OpenTelemetry), its supervisor and its metrics."""

from .contexts import WAYBILL_CONTEXTS
from .environment import env

# "console" in development (dev.py), "otlp" (OTEL_EXPORTER_OTLP_* variables) in
# production, "none" to switch it off.
WAYBILL_OTEL_EXPORTER = env.str("WAYBILL_OTEL_EXPORTER", default="none")
WAYBILL_OTEL_CONSOLE_FILE = env.str("WAYBILL_OTEL_CONSOLE_FILE", default="")
WAYBILL_SERVICE_NAME = env.str("WAYBILL_SERVICE_NAME", default="waybill-" + "-".join(WAYBILL_CONTEXTS or ["shell"]))

# Supervision (services mode under `make up` and the services tests): the control
# interface of the supervisor that runs this process (unix:///.../supervisor.sock). /readyz
# and the operations report name the processes of this process's contexts that keep
# crashing. Empty (embedded mode, compose): nothing to ask.
WAYBILL_SUPERVISOR_URL = env.str("WAYBILL_SUPERVISOR_URL", default="")

# Metrics for machines (Prometheus, waybill.metrics), never public: this process's figures
# on prometheus_client's own HTTP server at this host:port when set (every process: web,
# worker, relay; meant for loopback or a private network, not the gateway), and the web
# processes' /metrics page to staff, or to whoever shows this token as
# "Authorization: Bearer <token>" (a scraper that has no user).
WAYBILL_METRICS_ADDR = env.str("WAYBILL_METRICS_ADDR", default="")
WAYBILL_METRICS_TOKEN = env.str("WAYBILL_METRICS_TOKEN", default="")
# Where the operations console links a trace id: a URL with "{trace_id}" in it, e.g.
# http://127.0.0.1:16686/trace/{trace_id} for Jaeger; empty, the id is shown unlinked.
WAYBILL_TRACE_URL_TEMPLATE = env.str("WAYBILL_TRACE_URL_TEMPLATE", default="")
