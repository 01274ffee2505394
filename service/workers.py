"""Roles: which background workers a process runs (`serve` runs all of them)."""

from __future__ import annotations

from collections.abc import Sequence

from service.context import Services
from service.deliverer import Deliverer
from service.fetcher import Fetcher
from service.pruner import Pruner
from service.reconciler import Reconciler
from service.submitter import Submitter
from service.worker_base import Worker

ROLES: dict[str, type[Worker]] = {
    "submitter": Submitter,
    "reconciler": Reconciler,
    "fetcher": Fetcher,
    "deliverer": Deliverer,
    "pruner": Pruner,
}
ALL_ROLES: tuple[str, ...] = tuple(ROLES)


class Roles:
    """Starts and stops the workers named in `roles`."""

    def __init__(self, services: Services, roles: Sequence[str]) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles: {sorted(unknown)}; choose from {list(ROLES)}")
        self.workers = [ROLES[name](services) for name in roles]

    async def start(self) -> None:
        for worker in self.workers:
            worker.start()

    async def stop(self) -> None:
        for worker in reversed(self.workers):
            await worker.stop()
