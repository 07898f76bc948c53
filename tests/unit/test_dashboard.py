"""The Grafana dashboard only queries metrics ModelCycle exports, with labels those metrics have.

Exported metrics are found in the code itself: every prometheus_client metric or metric family
constructed under operator/modelcycle (Counter, Gauge, Histogram, Summary, Info, Enum and the
*MetricFamily classes), with the series names Prometheus sees (`_total` for counters, `_bucket`,
`_sum`, `_count` for histograms...). A renamed metric therefore fails this test instead of leaving
an empty panel.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "modelcycle"
DASHBOARD = REPO / "charts" / "modelcycle" / "dashboards" / "modelcycle.json"

METRIC_TYPES = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
    "Info": "info",
    "Enum": "stateset",
    "CounterMetricFamily": "counter",
    "GaugeMetricFamily": "gauge",
    "HistogramMetricFamily": "histogram",
    "SummaryMetricFamily": "summary",
    "InfoMetricFamily": "info",
    "GaugeHistogramMetricFamily": "gaugehistogram",
    "StateSetMetricFamily": "stateset",
}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
}
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Labels Prometheus (and the Prometheus Operator) attach to every scraped series.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "service", "endpoint", "le", "__name__"}

_PROMQL_WORDS = """
    by without on ignoring group_left group_right bool and or unless offset
    sum min max avg count stddev stdvar topk bottomk quantile count_values group
    rate irate increase delta idelta deriv changes resets histogram_quantile
    abs ceil floor round clamp clamp_min clamp_max label_replace label_join vector scalar time timestamp
    absent absent_over_time avg_over_time min_over_time max_over_time sum_over_time count_over_time
    last_over_time quantile_over_time sort sort_desc exp ln log2 log10 sqrt predict_linear holt_winters
    inf nan atan2
"""
PROMQL_FUNCTIONS_AND_KEYWORDS = set(_PROMQL_WORDS.split())


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: frozenset[str] | None
    """Label names, when the definition lists them literally (None: not known statically)."""
    where: str

    def series(self) -> set[str]:
        base = self.name
        if self.type == "counter" and base.endswith("_total"):
            base = base[: -len("_total")]
        return {base + suffix for suffix in SUFFIXES[self.type]}


def _labels(node: ast.AST | None, constants: dict[str, list[str]]) -> frozenset[str] | None:
    if node is None:
        return frozenset()
    if isinstance(node, ast.List | ast.Tuple):
        out: set[str] = set()
        for element in node.elts:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                out.add(element.value)
            elif (
                isinstance(element, ast.Starred)
                and isinstance(element.value, ast.Name)
                and element.value.id in constants
            ):
                out |= set(constants[element.value.id])
            else:
                return None
        return frozenset(out)
    if isinstance(node, ast.Name) and node.id in constants:
        return frozenset(constants[node.id])
    return None


@cache
def exported_metrics() -> dict[str, Metric]:
    """Every metric defined in operator/modelcycle, by series name."""
    found: dict[str, Metric] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        # `common = ["model", "version"]`-style label lists, anywhere in the module.
        constants: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.List)
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)
            ):
                constants[node.targets[0].id] = [str(e.value) for e in node.value.elts]  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in METRIC_TYPES:
                continue
            first = (
                node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            )
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            label_node = keywords.get("labelnames", keywords.get("labels"))
            if label_node is None and len(node.args) >= 3 and not name.endswith("MetricFamily"):
                label_node = node.args[2]
            metric = Metric(
                name=first.value,
                type=METRIC_TYPES[name],
                labels=_labels(label_node, constants),
                where=f"{path.relative_to(REPO)}:{node.lineno}",
            )
            for series in metric.series():
                found[series] = metric
    return found


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and template variable."""
    for panel in board["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []):
                yield f"panel {sub['title']!r}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: use label_values(<selector>, <label>)"
            yield f"variable {variable['name']!r}", match.group(1)


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


def selectors(expr: str) -> list[Selector]:
    """The metric names of a PromQL expression with the labels each selector matches on.

    Strings, durations and Grafana variables are removed, label matchers are read from `{...}`,
    and identifiers followed by `(` (functions), keywords and `by (...)` label lists are skipped.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]*\b", " ", text)  # numbers and offset durations
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside strings
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found: list[Selector] = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", text):
        name, matchers, call = match.group(1), match.group(2), match.group(3)
        if call and not matchers:
            continue  # a function or aggregation
        if name in PROMQL_FUNCTIONS_AND_KEYWORDS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        labels = frozenset(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append(Selector(name, labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {
        label.strip()
        for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text)
        for label in group.split(",")
        if label.strip()
    }


def test_extractor_reads_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, model) "
        '(rate(foo_bucket{model=~"$model", outcome="success"}[5m])))'
        " / ignoring(x) bar_total offset 5m > bool 0 and on (kind) baz"
    )
    assert selectors(expr) == [
        Selector("foo_bucket", frozenset({"model", "outcome"})),
        Selector("bar_total", frozenset()),
        Selector("baz", frozenset()),
    ]
    assert grouping_labels(expr) == {"le", "model", "x", "kind"}


def test_the_code_exports_the_metrics_the_tests_know() -> None:
    metrics = exported_metrics()
    assert "modelcycle_operator_reconcile_total" in metrics
    assert "modelcycle_operator_reconcile_duration_seconds_bucket" in metrics
    assert {
        "modelcycle_inference_requests_total",
        "modelcycle_inference_request_duration_seconds_bucket",
    } <= set(metrics)


EXPRESSIONS = list(expressions(dashboard()))


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_every_query_uses_exported_metrics_and_labels(where: str, expr: str) -> None:
    metrics = exported_metrics()
    found = selectors(expr)
    assert found, f"{where}: no metric in {expr}"
    for selector in found:
        if selector.metric in PROMETHEUS_SERIES:
            continue
        assert selector.metric in metrics, (
            f"{where}: {selector.metric} is not exported by operator/modelcycle "
            f"(known: {sorted(m for m in metrics if not m.endswith('_created'))})"
        )
        metric = metrics[selector.metric]
        if metric.labels is None:
            continue
        known = metric.labels | TARGET_LABELS
        unknown = selector.labels - known
        assert not unknown, f"{where}: {selector.metric} has no label(s) {sorted(unknown)} ({metric.where})"
    for label in grouping_labels(expr):
        owners = [metrics[s.metric] for s in found if s.metric in metrics]
        assert any(m.labels is None or label in m.labels | TARGET_LABELS for m in owners), (
            f"{where}: grouping by {label!r}, which none of {[m.name for m in owners]} has"
        )


def test_dashboard_covers_every_area() -> None:
    board = dashboard()
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Serving traffic", "Predictions", "Drift", "Retraining and lifecycle", "Operator"]
    used = {s.metric for _, expr in EXPRESSIONS for s in selectors(expr)}
    for needed in (
        "modelcycle_inference_requests_total",
        "modelcycle_inference_request_duration_seconds_bucket",
        "modelcycle_predictions_total",
        "modelcycle_monitor_drift_score",
        "modelcycle_feature_psi",
        "modelcycle_operator_reconcile_total",
        "modelcycle_operator_reconcile_errors_total",
        "modelcycle_object_ready",
    ):
        assert needed in used, f"no panel shows {needed}"


def test_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] == "ModelCycle"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel.get("description"), f"panel {panel['title']} needs a description"
