"""The parts every role of a segflow process shares, built once from Settings and passed down."""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass, field

from service.artifacts import ArtifactBackend, open_backend
from service.links import LinkSigner
from service.metrics import Metrics
from service.settings import Settings
from service.signing import CallbackSigner
from service.store import Store, open_store_for
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
    instance_id: str = field(default_factory=lambda: _secrets.token_hex(4))

    async def close(self) -> None:
        await self.upstream.close()
        await self.artifacts.close()
        await self.store.close()


async def open_services(settings: Settings, store: Store | None = None) -> Services:
    """Open the store and the upstream client described by `settings`."""
    if not settings.webhook_keys:
        from service.settings import ConfigError

        raise ConfigError("SEGFLOW_WEBHOOK_KEYS: required (comma-separated, first signs, all verify)")
    store = store or open_store_for(settings.database_url, group_commit_max=settings.group_commit_max)
    await store.open()
    upstream = UpstreamClient(
        settings.upstream_url,
        settings.upstream_api_key,
        timeouts=UpstreamTimeouts(connect_s=settings.upstream_connect_timeout_s, total_s=settings.upstream_timeout_s),
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
        instance_id=settings.instance_id or _secrets.token_hex(4),
    )
    listen = getattr(store, "listen", None)
    if listen is not None:  # PostgreSQL: workers on every replica wake on NOTIFY
        await listen(services.wakeup.notify)
    return services
