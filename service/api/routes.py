"""The API's route table: every path, its method and whether it needs a key."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from service import inputs
from service.api import batches, callbacks, downloads, jobs, manifest, ops, spend
from service.api.auth import Authenticator
from service.api.endpoint import CallHandler, authed, guarded
from service.api.openapi import load_document, openapi_route


def api_routes(*, metrics: bool = True) -> list[BaseRoute]:
    """Routes of the public REST API, ops probes and the OpenAPI document (and /metrics, unless
    it is served on a listener of its own)."""
    auth = Authenticator()  # one per route table, so each app has its own key cache

    def v1(path: str, method: str, handler: CallHandler) -> Route:
        return Route(path, authed(auth, handler), methods=[method], name=handler.__name__)

    return [
        v1("/v1/batches", "POST", batches.create_batch),
        v1("/v1/batches", "GET", batches.list_batches),
        v1("/v1/batches/{batch_id}", "GET", batches.get_batch),
        v1("/v1/batches/{batch_id}/jobs", "GET", batches.list_batch_jobs),
        v1("/v1/batches/{batch_id}/manifest", "GET", manifest.batch_manifest),
        v1("/v1/jobs/{job_id}", "GET", jobs.get_job),
        v1("/v1/jobs/{job_id}/mask", "GET", jobs.job_mask),
        v1("/v1/jobs/{job_id}/events", "GET", jobs.job_events),
        v1("/v1/jobs/{job_id}/cancel", "POST", jobs.cancel),
        v1("/v1/jobs/{job_id}/retry", "POST", jobs.retry),
        v1("/v1/inputs", "POST", inputs.upload_input),
        v1("/v1/estimates", "POST", spend.estimate),
        v1("/v1/budget", "GET", spend.get_budget),
        v1("/v1/budget", "PUT", spend.set_budget),
        v1("/v1/subscriptions", "POST", callbacks.create_subscription),
        v1("/v1/subscriptions", "GET", callbacks.list_subscriptions),
        v1("/v1/subscriptions/{sub_id}", "GET", callbacks.get_subscription),
        v1("/v1/subscriptions/{sub_id}", "PATCH", callbacks.update_subscription),
        v1("/v1/subscriptions/{sub_id}", "DELETE", callbacks.delete_subscription),
        v1("/v1/subscriptions/{sub_id}/replay", "POST", callbacks.replay_subscription),
        v1("/v1/subscriptions/{sub_id}/rotate-secret", "POST", callbacks.rotate_secret),
        v1("/v1/subscriptions/{sub_id}/test", "POST", callbacks.send_test_event),
        v1("/v1/callback-keys", "GET", callbacks.callback_keys),
        v1("/v1/events", "GET", callbacks.list_events),
        v1("/v1/events/{event_id}/deliveries", "GET", callbacks.event_deliveries),
        v1("/v1/events/{event_id}/replay", "POST", callbacks.replay_event),
        v1("/v1/deliveries/dead", "GET", callbacks.dead_deliveries),
        Route("/inputs/{name}", guarded(inputs.serve_input), methods=["GET"], name="serve_input"),
        # Signed, expiring links: the signature is the credential, so no API key.
        Route("/links/masks/{job_id}/{idx}.png", guarded(downloads.signed_mask), methods=["GET"], name="signed_mask"),
        Route("/healthz", guarded(ops.healthz), methods=["GET"], name="healthz"),
        Route("/readyz", guarded(ops.readyz), methods=["GET"], name="readyz"),
        Route("/openapi.json", guarded(openapi_route(load_document())), methods=["GET"], name="openapi"),
        *([metrics_route()] if metrics else []),
    ]


def metrics_route() -> Route:
    return Route("/metrics", guarded(ops.metrics), methods=["GET"], name="metrics")
