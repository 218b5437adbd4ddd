"""The alert rules shipped with drorch, checked and exercised by Prometheus's own promtool, and written against
the metrics drorch really serves."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from drorch.store.sql_store import Store
from drorch.web.metrics import StoreCollector, exposition

RULES = Path(__file__).parents[1] / "drorch" / "prometheus" / "alerts.yml"
TESTS = Path(__file__).parent / "prometheus" / "alerts.test.yml"
# integration/setup.sh unpacks it from Debian's prometheus package.
PROMTOOL = Path(os.environ.get("DRORCH_LAB_DIR", "/var/lib/drorch-lab")) / "prometheus" / "usr" / "bin" / "promtool"


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: run integration/setup.sh"
    done = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules_and_each_alert_trips_and_clears() -> None:
    assert "SUCCESS: 13 rules found" in promtool("check", "rules", str(RULES), cwd=RULES.parent)
    tested = {t["alertname"] for group in yaml.safe_load(TESTS.read_text())["tests"]
              for t in group["alert_rule_test"]}
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert tested == alerts  # every alert has its test
    assert "SUCCESS" in promtool("test", "rules", TESTS.name, cwd=TESTS.parent)


def test_the_rules_use_only_metrics_drorch_serves(store: Store) -> None:
    served = {f.name for f in text_string_to_metric_families(exposition(StoreCollector(store, dict)).decode())}
    used = set(re.findall(r"\bdrorch_[a-z_]+", RULES.read_text()))
    assert used <= served, used - served
