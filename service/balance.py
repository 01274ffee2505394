"""The balance guard: creates pause, with a reason an operator can read (the API, the console,
/readyz, the `segflow_creates_paused` metric), while the account's usable balance is below the
reserve or after the upstream answered 402; they resume once the balance is back.

Each submitter reads the balance itself (every replica talks to the same account) and writes what
it found to the store, where every replica's API reads it.
"""

from __future__ import annotations

import time

import structlog

from service.context import Services
from service.store import AccountState
from service.upstream.errors import UpstreamError

log = structlog.get_logger("segflow.balance")


class BalanceGuard:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.paused = False
        self.reason: str | None = None
        self._checked_at = 0.0
        self._refused = False  # a 402 was seen: only a balance read above the reserve lifts it
        self._pending: AccountState | None = None  # what to write to the store next round

    def refused(self, message: str) -> None:
        """The upstream answered 402: pause until the balance is back."""
        self._refused = True
        self._set(True, f"the upstream refused a create for credit (402: {message[:200]})", None)

    async def allows_creates(self) -> bool:
        """Whether creates may go out now; reads the balance when due."""
        s = self.services.settings
        due = time.monotonic() - self._checked_at >= s.balance_check_s
        if due and (s.balance_reserve_usd > 0 or self._refused):
            await self.check()
        return not self.paused

    async def check(self) -> None:
        self._checked_at = time.monotonic()
        reserve = self.services.settings.balance_reserve_usd
        try:
            info = await self.services.upstream.account_info()
        except UpstreamError as exc:  # an account call that fails says nothing: keep the last word
            log.warning("balance_unknown", error_class=type(exc).__name__, error=str(exc))
            return
        balance = info.equivalent_in_usd
        if balance is None:
            return
        self.services.metrics.balance_usd.set(balance)
        if self._refused and balance < max(reserve, 0.01):
            self._set(True, f"the upstream refused a create for credit (402); usable balance ${balance:.2f}", balance)
        elif balance < reserve:
            self._set(True, f"usable balance ${balance:.2f} is below the reserve of ${reserve:.2f}", balance)
        else:
            self._refused = False
            self._set(False, None, balance)

    def _set(self, paused: bool, reason: str | None, balance: float | None) -> None:
        if paused and (not self.paused or reason != self.reason):
            log.warning("creates_paused", reason=reason)
        elif self.paused and not paused:
            log.info("creates_resumed", balance=balance)
        self.paused, self.reason = paused, reason
        self.services.metrics.creates_paused.set(1 if paused else 0)
        self._pending = AccountState(paused, reason, balance, time.time())

    async def publish(self) -> None:
        """Write the guard's last word for every replica's API (called by the submitter's round)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await self.services.store.set_account_state(pending)
