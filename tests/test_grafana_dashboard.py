"""The Grafana dashboard (deploy/grafana/waybill.json) draws what the metrics endpoint
exposes: every panel's query names only metrics a scrape of this process shows (with the
suffixes their type gives them: a counter's ``_total``, a histogram's ``_bucket``, ``_sum``
and ``_count``), every ``waybill_`` metric has a panel, and the file is a dashboard
Grafana imports (schema version, a data source variable, panels placed on the grid)."""

from __future__ import annotations

import json
import re
from itertools import combinations

import pytest

from launcher.stack import REPO
from tests.support.scrape import Scrape
from waybill import metrics

pytestmark = pytest.mark.django_db(databases="__all__")  # orders' collectors read its database

DASHBOARD = json.loads((REPO / "deploy" / "grafana" / "waybill.json").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
EXPRESSIONS = [(panel["title"], target["expr"]) for panel in PANELS for target in panel["targets"]]

# Words of PromQL that are not metric names (functions are told by the "(" after them).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# Samples each family type adds to its name.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings (label values, label_replace's arguments)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations ($__rate_interval too)
    # Label lists of aggregations and vector matching.
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        followed_by = expr[match.end():].lstrip()[:1]
        if followed_by != "(" and match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


@pytest.fixture
def exposed() -> set[str]:
    """Every sample name this process's metrics may show: each family's name with its type's
    suffixes, whether or not it has a sample yet (a counter nobody counted has none)."""
    families = Scrape(metrics.exposition()[0].decode()).families.values()
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def test_the_parser_reads_names_and_nothing_else():
    assert metric_names("histogram_quantile(0.99, sum by (le, consumer) "
                        "(rate(waybill_handler_seconds_bucket{consumer=~\"o.*\"}[5m])))") == \
        {"waybill_handler_seconds_bucket"}
    assert metric_names("sum by (consumer) (rate(a_sum[$__rate_interval])) / on (consumer) group_left "
                        "sum(rate(a_count[1m] offset 5m)) > bool 0") == {"a_sum", "a_count"}


@pytest.mark.parametrize(("title", "expr"), EXPRESSIONS, ids=[title for title, _ in EXPRESSIONS])
def test_every_query_names_only_metrics_the_endpoint_exposes(title, expr, exposed):
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr!r}"
    assert names <= exposed, f"{title}: {sorted(names - exposed)} are not exposed"


def test_every_waybill_metric_has_a_panel():
    families = {name for name in Scrape(metrics.exposition()[0].decode()).families if name.startswith("waybill_")}
    drawn = {name for _, expr in EXPRESSIONS for name in metric_names(expr)}
    undrawn = {family for family in families
               if not any(name == family or name.startswith(family + "_") for name in drawn)}
    assert not undrawn


def test_it_is_a_dashboard_grafana_imports():
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(target["refId"] and target["expr"] for target in panel["targets"])
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys() and grid["x"] + grid["w"] <= 24, panel["title"]


def test_no_two_panels_overlap():
    def cells(panel) -> set[tuple[int, int]]:
        grid = panel["gridPos"]
        return {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}

    for one, other in combinations(DASHBOARD["panels"], 2):
        assert not cells(one) & cells(other), (one["title"], other["title"])
