"""The security linter over the platform's own code (bandit, in the test extras): no
finding of high severity in ``platform/`` and ``apps/``. A finding that is mitigated
carries ``# nosec <id>`` with the reason beside it (xmlrpc.client, parsed by defusedxml:
``waybill.supervisor``); the mitigation itself is tested below."""

from __future__ import annotations

import json
import subprocess
import sys
import xmlrpc.client  # nosec B411 - the test proves it is defused

import pytest
from defusedxml import EntitiesForbidden

from e2e.harness import REPO_DIR


def test_bandit_finds_nothing_of_high_severity():
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", "platform", "apps", "--severity-level", "high", "-q", "-f", "json"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    assert report["errors"] == [], report["errors"]  # a file bandit could not read is not checked
    high = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert high == [], "\n".join(high)
    assert report["metrics"]["_totals"]["loc"] > 10_000  # it read the code, not an empty tree


def test_the_supervisors_answers_are_parsed_with_entities_refused():
    import waybill.supervisor  # noqa: F401 - defuses xmlrpc.client for the process

    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            "<methodResponse><params><param><value><string>&b;</string></value></param></params>"
            "</methodResponse>")
    parser, _ = xmlrpc.client.getparser()
    with pytest.raises(EntitiesForbidden):
        parser.feed(bomb)
