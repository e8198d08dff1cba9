"""The Prometheus view of the monitor's checks: one CollectorRegistry of its own, updated after each check.

Labels are inventory identifiers only (host, component kind, rule id, severity, deployment, sink), which have
strict patterns. A value that is not known is NaN, never 0: a host that could not be observed has NaN drift,
and a policy engine that gave no answer leaves every rule's violation count NaN and ``sovkit_compliant`` 0.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Metric, start_http_server, write_to_textfile
from prometheus_client.registry import Collector

from sovkit import __version__
from sovkit.errors import MonitorError
from sovkit.monitor.check import CheckReport
from sovkit.plan.model import COMPONENT_ORDER

NAN = math.nan


class _Series:
    """A labelled gauge whose label sets are replaced as a whole each check (stale series removed)."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.current: set[tuple[str, ...]] = set()

    def publish(self, values: dict[tuple[str, ...], float]) -> None:
        for labels in self.current - set(values):
            self.gauge.remove(*labels)
        for labels, value in values.items():
            self.gauge.labels(*labels).set(value)
        self.current = set(values)


class _Snapshot(Collector):
    """Collects the monitor's metrics under the update lock, so a scrape never sees half of a check."""

    def __init__(self, source: CollectorRegistry, lock: threading.Lock) -> None:
        self.source = source
        self.lock = lock

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            return list(self.source.collect())


class MonitorMetrics:
    """Every sovkit_* metric of the monitor (docs/monitor.md lists them); ``registry`` is what is served."""

    def __init__(self, site: str) -> None:
        self._lock = threading.Lock()
        r = CollectorRegistry()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Snapshot(r, self._lock))
        info = Gauge("sovkit_monitor_info", "The monitored site and sovkit version (always 1).",
                     ["site", "version"], registry=r)
        info.labels(site, __version__).set(1)
        self.compliant = Gauge("sovkit_compliant", "1 when the last check found the site compliant; 0 when not "
                               "or unknown (engine down, host unobservable, log not verified).", registry=r)
        self.allowed = Gauge("sovkit_policy_allowed", "1 when the policy allowed the site at the last check; 0 "
                             "when denied or the engine gave no answer.", registry=r)
        self.engine_up = Gauge("sovkit_policy_engine_up", "1 when the policy engine answered at the last check.",
                               registry=r)
        self.rules = _Series(Gauge("sovkit_policy_rule_violations", "Unwaived findings per rule at the last "
                                   "check (0: passes; NaN: the engine gave no answer).", ["rule", "severity"],
                                   registry=r))
        self.drift = _Series(Gauge("sovkit_drift", "Differences between what the host reports and the recorded "
                                   "state (NaN: host not observed).", ["host", "component"], registry=r))
        self.pending = _Series(Gauge("sovkit_pending_changes", "What apply would change on the host to match the "
                                     "inventory (NaN: host not observed).", ["host", "component"], registry=r))
        self.observable = _Series(Gauge("sovkit_host_observable", "1 when the host was read back at the last "
                                        "check.", ["host"], registry=r))
        self.serving = _Series(Gauge("sovkit_serving_healthy", "1 when the serving process answered its "
                                     "readiness probe at the last check.", ["host", "deployment"], registry=r))
        self.sinks = _Series(Gauge("sovkit_decision_log_write_ok", "1 when the last decision was written to the "
                                   "sink.", ["sink"], registry=r))
        self.log_valid = Gauge("sovkit_attestation_log_valid", "1 when the attestation log verified at the last "
                               "check.", registry=r)
        self.log_entries = Gauge("sovkit_attestation_log_entries", "Entries in the attestation log after the "
                                 "last check's statement.", registry=r)
        self.last_ok = Gauge("sovkit_last_successful_check_timestamp_seconds", "When the last check with every "
                             "stage run and attested finished (Unix time).", registry=r)
        self.last = Gauge("sovkit_last_check_timestamp_seconds", "When the last check finished (Unix time).",
                          registry=r)
        self.duration = Gauge("sovkit_check_duration_seconds", "How long the last check took.", registry=r)
        self.checks = Counter("sovkit_checks", "Checks run.", registry=r)
        self.failed = Counter("sovkit_checks_failed", "Checks where a stage failed or the statement could not be "
                              "attested.", registry=r)
        self.stage_errors = Counter("sovkit_check_errors", "Failed stages, by stage.", ["stage"], registry=r)

    def update(self, report: CheckReport) -> None:
        """Publish one check's result (called after each check)."""
        p = report.predicate
        with self._lock:
            self.checks.inc()
            if report.failed:
                self.failed.inc()
            for stage in p.errors:
                self.stage_errors.labels(stage).inc()
            if report.attest_error is not None:
                self.stage_errors.labels("attest").inc()
            self.compliant.set(1 if p.compliant else 0)
            self.allowed.set(1 if p.allowed else 0)
            self.engine_up.set(1 if report.decision is not None else 0)
            self._rules(report)
            components = list(COMPONENT_ORDER)
            for series, found in ((self.drift, p.drift), (self.pending, p.pending)):
                values: dict[tuple[str, ...], float] = {}
                for host in report.hosts:
                    for comp in components:
                        values[(host, comp)] = NAN if host not in p.observed else \
                            float(sum(1 for c in found.get(host, []) if c.component == comp))
                series.publish(values)
            self.observable.publish({(h,): 1.0 if h in p.observed else 0.0 for h in report.hosts})
            self.serving.publish({(s.host, s.name): 1.0 if s.healthy else 0.0 for s in p.serving})
            self.sinks.publish({(name,): 1.0 if msg == "ok" else 0.0 for name, msg in p.decision_log.items()})
            self.log_valid.set(1 if p.attestation_log is not None and p.attestation_log.ok else 0)
            if report.log_entries is not None:
                self.log_entries.set(report.log_entries)
            self.duration.set(p.duration_s)
            self.last.set(report.finished)
            if not report.failed:
                self.last_ok.set(report.finished)

    def _rules(self, report: CheckReport) -> None:
        values: dict[tuple[str, ...], float] = {k: NAN if report.decision is None else 0.0
                                                for k in self.rules.current}
        if report.decision is not None:
            for f in report.decision.findings:
                if f.get("waived") or f.get("severity") not in ("deny", "warn"):
                    continue
                key = (str(f.get("id")), str(f.get("severity")))
                values[key] = values.get(key, 0.0) + 1
        self.rules.publish(values)

    def write_textfile(self, path: str) -> None:
        """For node_exporter's textfile collector (the timer-driven `--once` unit)."""
        try:
            write_to_textfile(path, self.registry)
        except OSError as exc:
            raise MonitorError(f"cannot write metrics to {path}: {exc.strerror or exc}") from exc


@dataclass
class MetricsServer:
    """The /metrics HTTP endpoint (prometheus_client's own server, in a daemon thread)."""

    server: Any
    thread: threading.Thread
    address: str
    port: int

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(metrics: MonitorMetrics, address: str, port: int) -> MetricsServer:
    """Serve ``metrics`` on http://address:port/metrics; a taken port is a clear error."""
    try:
        server, thread = start_http_server(port, addr=address, registry=metrics.registry)
    except OSError as exc:
        raise MonitorError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}",
                          "choose another --metrics-port (or --metrics-address)") from exc
    return MetricsServer(server, thread, address, server.server_address[1])

