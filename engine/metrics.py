"""Prometheus metrics: what the engine did (counters, histograms) and how its queue looks (gauges).

Two kinds of numbers, kept apart on purpose:

- **Events of this process** (emails by outcome, tick durations, inbound messages, webhook
  deliveries, API requests) are counters and histograms living in prometheus-client's *default*
  registry, updated by the small ``record_*`` / ``observe_*`` functions below. The code that
  calls them (the tick, the mailbox poll, the webhook pass, the API middleware) holds no engine
  handle to pass along, and Prometheus scrapes a *process*: one registry per process is the
  model it expects. The default one also brings the ``process_*`` and ``python_*`` collectors for
  free, and an application that embeds the engine and already exposes the default registry
  (``prometheus_client.make_asgi_app()``) shows these metrics without any wiring.
- **The state of the queue** (due emails, the oldest due email's lag, the runtime's lag) is read
  from the database at scrape time by ``/metrics`` (async, one indexed query each) and rendered
  from a throwaway registry built for that one scrape. It is never stored in a global gauge, so
  two engines in one process never overwrite each other's values and no value goes stale
  between scrapes.

Label values are closed sets (outcomes, message kinds, route templates), never ids, so the
number of series stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The outcomes the send path reports; pre-created so that a dashboard sees 0, not "no data".
EMAIL_OUTCOMES = ("sent", "deferred", "failed", "bounced", "uncertain", "cancelled")
INBOUND_KINDS = ("bounce", "delivery_report", "auto_reply", "feedback", "message")

EMAILS = Counter("campaign_engine_emails", "Emails by outcome of their send attempt (sent, deferred, failed, "
                 "bounced, uncertain, ...)", ["outcome"])
TICK_SECONDS = Histogram("campaign_engine_tick_duration_seconds", "Duration of one engine tick",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
INBOUND = Counter("campaign_engine_inbound_messages", "Messages read from the senders' mailboxes, by kind",
                  ["kind"])
WEBHOOKS = Counter("campaign_engine_webhook_deliveries", "Webhook delivery attempts by outcome (delivered, failed)",
                   ["outcome"])
API_REQUESTS = Counter("campaign_engine_api_requests", "HTTP requests by method, route template and status",
                       ["method", "route", "status"])
API_SECONDS = Histogram("campaign_engine_api_request_duration_seconds", "HTTP request duration by route template",
                        ["method", "route"])

for _outcome in EMAIL_OUTCOMES:
    EMAILS.labels(_outcome)
for _kind in INBOUND_KINDS:
    INBOUND.labels(_kind)
for _result in ("delivered", "failed"):
    WEBHOOKS.labels(_result)


def record_email_outcome(outcome: str, count: int = 1) -> None:
    """Count ``count`` emails that ended an attempt with ``outcome`` (``"sent"``, ``"deferred"``, ...)."""
    if count > 0:
        EMAILS.labels(outcome).inc(count)


def observe_tick(seconds: float) -> None:
    """Record the duration of one tick, in seconds."""
    TICK_SECONDS.observe(seconds)


def record_inbound(kind: str) -> None:
    """Count one inbound message of ``kind`` (the classifier's: bounce, auto_reply, message, ...)."""
    INBOUND.labels(kind).inc()


def record_webhook(ok: bool) -> None:
    """Count one webhook delivery attempt: ``ok`` when the receiver answered 2xx."""
    WEBHOOKS.labels("delivered" if ok else "failed").inc()


def record_api_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one HTTP request; ``route`` is the route's template (``/v1/campaigns/{campaign_id}``)."""
    API_REQUESTS.labels(method, route, str(status)).inc()
    API_SECONDS.labels(method, route).observe(seconds)


@dataclass(frozen=True, slots=True)
class QueueState:
    """What ``/metrics`` read from the database (and the runtime) for this one scrape."""

    due_emails: int
    oldest_due_lag_seconds: float
    runtime_lag_seconds: float | None  # None: no runtime loop in this process


def render(state: QueueState | None) -> bytes:
    """The text exposition: the process's counters, then this scrape's queue gauges."""
    text = generate_latest(REGISTRY)
    if state is None:
        return text
    scrape = CollectorRegistry(auto_describe=False)
    Gauge("campaign_engine_due_emails", "Scheduled emails of active campaigns whose due time has passed",
          registry=scrape).set(state.due_emails)
    Gauge("campaign_engine_oldest_due_email_lag_seconds",
          "How long the oldest due email of an active campaign has been waiting (send windows and limits "
          "included)", registry=scrape).set(state.oldest_due_lag_seconds)
    if state.runtime_lag_seconds is not None:
        Gauge("campaign_engine_runtime_lag_seconds",
              "How far this process's runtime loop is behind the tick it owes", registry=scrape
              ).set(state.runtime_lag_seconds)
    return text + generate_latest(scrape)


__all__ = ["CONTENT_TYPE", "QueueState", "observe_tick", "record_api_request", "record_email_outcome",
           "record_inbound", "record_webhook", "render"]
