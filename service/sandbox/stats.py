"""Counters behind GET /_sandbox/stats, so tests and benchmarks can see what the sandbox did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.sandbox.settings import FAULT_KINDS

_STATUSES = ("staged", "pending", "processing", "completed", "failed", "cancelled", "canceled")
WEBHOOK_COUNTERS = ("sent", "delivered", "failed", "retried", "dropped", "duplicated", "delayed", "reordered")


@dataclass
class SandboxStats:
    tasks_created: int = 0
    tasks_staged: int = 0  # accepted over the concurrency limit (over_limit="stage")
    creates_rejected: Counter[int] = field(default_factory=Counter)
    gets: int = 0
    gets_rejected: Counter[int] = field(default_factory=Counter)
    webhooks: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    pixels_total: int = 0
    price_usd_total: float = 0.0
    outputs_served: int = 0

    def to_json(
        self,
        statuses: Iterable[str],
        *,
        credit_left_usd: float | None,
        outputs_stored: int,
        outputs_expired: int,
    ) -> dict[str, Any]:
        by_status = Counter(statuses)
        return {
            "tasks_created": self.tasks_created,
            "tasks_staged": self.tasks_staged,
            "tasks_by_status": {s: by_status.get(s, 0) for s in _STATUSES},
            "creates_rejected": {str(code): n for code, n in sorted(self.creates_rejected.items())},
            "gets": self.gets,
            "gets_rejected": {str(code): n for code, n in sorted(self.gets_rejected.items())},
            "webhooks": {name: self.webhooks.get(name, 0) for name in WEBHOOK_COUNTERS},
            "faults": {kind: self.faults.get(kind, 0) for kind in FAULT_KINDS},
            "pixels_total": self.pixels_total,
            "price_usd_total": round(self.price_usd_total, 2),
            "credit_left_usd": None if credit_left_usd is None else round(credit_left_usd, 2),
            "outputs": {"stored": outputs_stored, "served": self.outputs_served, "expired": outputs_expired},
        }
