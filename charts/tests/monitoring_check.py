"""Checks the push chart's monitoring objects against the real server.

Usage: monitoring_check.py RENDERED.yaml DASHBOARD.json METRICS.txt OUTDIR MAX_CONNECTIONS

RENDERED is `helm template` with the Prometheus Operator's API and the
dashboard on; METRICS.txt a scrape of the metrics port of a real
push-server. Writes the PrometheusRule's groups to OUTDIR/rules.yaml (for
`promtool check rules` / `promtool test rules`) and fails when:
- the dashboard JSON does not parse, lacks a panel for connections,
  deliveries, publishes, the broker, slow consumers, open fds or memory, or
  a panel has no query;
- the dashboard ConfigMap differs from files/grafana-dashboard.json or lacks
  the grafana_dashboard: "1" label;
- an alert or dashboard query names a metric the server does not export;
- PushConnectionsNearLimit of the default values is not 90 % of
  push-server's own default max_connections (MAX_CONNECTIONS, from --help).
"""
import json
import os
import re
import sys

import yaml


def fail(msg):
    print(f"FAIL {msg}")
    sys.exit(1)


rendered, dashboard_path, metrics_path, outdir, server_max = sys.argv[1:6]
with open(rendered) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
with open(metrics_path) as f:
    exported = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in f if line.strip() and not line.startswith("#")}
if "push_connections" not in exported:
    fail(f"{metrics_path} is not a push-server scrape")

rules = [d for d in docs if d["kind"] == "PrometheusRule"]
if len(rules) != 1:
    fail(f"{len(rules)} PrometheusRules rendered, want 1")
groups = rules[0]["spec"]["groups"]
os.makedirs(outdir, exist_ok=True)
with open(os.path.join(outdir, "rules.yaml"), "w") as f:
    yaml.safe_dump({"groups": groups}, f, sort_keys=False)
alerts = {r["alert"]: r["expr"] for g in groups for r in g["rules"]}
near = re.search(r"\) > ([0-9]+)$", alerts.get("PushConnectionsNearLimit", ""))
if not near or int(near.group(1)) != int(server_max) * 90 // 100:
    fail(f"PushConnectionsNearLimit {alerts.get('PushConnectionsNearLimit')!r} is not 90% of "
         f"push-server's default max_connections {server_max}")
for want in ("PushBrokerDown", "PushSlowConsumerDisconnects", "PushConnectionsNearLimit",
             "PushPublishErrors", "PushMetricsAbsent"):
    if want not in alerts:
        fail(f"PrometheusRule lacks {want}")

with open(dashboard_path) as f:
    text = f.read()
try:
    dash = json.loads(text)
except json.JSONDecodeError as e:
    fail(f"{dashboard_path} is not JSON: {e}")
cms = [d for d in docs if d["kind"] == "ConfigMap" and "push.json" in d.get("data", {})]
if len(cms) != 1 or cms[0]["data"]["push.json"].strip() != text.strip():
    fail("the dashboard ConfigMap is not files/grafana-dashboard.json")
if cms[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
    fail("the dashboard ConfigMap lacks the label grafana_dashboard: \"1\"")

queries = {}
for p in dash["panels"]:
    exprs = [t["expr"] for t in p.get("targets", []) if t.get("expr")]
    if not exprs:
        fail(f"dashboard panel {p['title']!r} has no query")
    queries[p["title"]] = exprs
templ = [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
everything = " ".join(e for es in queries.values() for e in es)
for metric in ("push_connections", "push_messages_delivered_total", "push_messages_published_total",
               "push_broker_up", "push_slow_consumer_disconnects_total", "process_open_fds",
               "process_resident_memory_bytes"):
    if not re.search(rf"\b{metric}\b", everything):
        fail(f"no dashboard panel shows {metric}")

names = set()
for e in list(alerts.values()) + [e for es in queries.values() for e in es] + templ:
    names |= set(re.findall(r"\b((?:push|process)_[a-z_]+)\b", e))
missing = sorted(n for n in names if n not in exported)
if missing:
    fail(f"alerts or dashboard query metrics push-server does not export: {missing}")
print(f"ok   PrometheusRule ({len(alerts)} alerts) and dashboard ({len(queries)} panels): "
      f"{len(names)} metric names, all exported by push-server")
