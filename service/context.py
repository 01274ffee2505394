"""The parts every role of a segflow process shares, built once from Settings and passed down."""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass, field

from service.artifacts import ArtifactBackend, open_backend
from service.links import LinkSigner
from service.metrics import Metrics
from service.settings import Settings, check_for_service
from service.signing import CallbackSigner
from service.store import Store, open_store_for
from service.timings import Timings
from service.tracing import Tracing
from service.upstream.client import UpstreamClient, UpstreamTimeouts
from service.wakeup import Wakeup
from service.webhook_secrets import WebhookSecrets


@dataclass
class Services:
    settings: Settings
    store: Store
    upstream: UpstreamClient
    secrets: WebhookSecrets
    artifacts: ArtifactBackend
    signer: CallbackSigner
    links: LinkSigner
    metrics: Metrics = field(default_factory=Metrics)
    wakeup: Wakeup = field(default_factory=Wakeup)
    timings: Timings = field(default_factory=Timings)
    instance_id: str = field(default_factory=lambda: _secrets.token_hex(4))
    tracing: Tracing = field(default_factory=Tracing)

    async def close(self) -> None:
        await self.upstream.close()
        await self.artifacts.close()
        await self.store.close()
        await self.tracing.close()


async def open_services(settings: Settings, store: Store | None = None, tracing: Tracing | None = None) -> Services:
    """Open the store and the upstream client described by `settings` (and tracing, as the
    settings and the OTEL_* variables ask, unless `tracing` is given)."""
    check_for_service(settings)
    instance_id = settings.instance_id or _secrets.token_hex(4)
    tracing = tracing or Tracing.from_settings(settings, instance_id)
    if settings.sqlite_path is None:
        tracing.instrument_asyncpg()
    store = store or open_store_for(settings.database_url, group_commit_max=settings.group_commit_max)
    await store.open()
    upstream = UpstreamClient(
        settings.upstream_url,
        settings.upstream_api_key,
        timeouts=UpstreamTimeouts(connect_s=settings.upstream_connect_timeout_s, total_s=settings.upstream_timeout_s),
        max_body_bytes=settings.upstream_max_body,
        trace_configs=tracing.client_trace_configs(),
    )
    await upstream.start()
    services = Services(
        settings=settings,
        store=store,
        upstream=upstream,
        secrets=WebhookSecrets([k.encode() for k in settings.webhook_keys]),
        artifacts=open_backend(settings.artifact_url, settings.artifact_dir, settings.s3_endpoint_url),
        signer=CallbackSigner([k.encode() for k in settings.webhook_keys]),
        links=LinkSigner(
            [k.encode() for k in settings.webhook_keys], settings.public_url, settings.artifact_link_ttl_s
        ),
        instance_id=instance_id,
        tracing=tracing,
        metrics=Metrics(max_tenants=settings.metrics_max_tenants),
    )
    # After every commit that gives workers work (late-bound: tests swap in a recording Wakeup).
    await store.listen(lambda topic: services.wakeup.notify(topic))
    return services
