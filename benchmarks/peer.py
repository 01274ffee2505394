"""The peer baseline of the ingest benchmark: the completion webhook as a user would write it
without segflow — FastAPI, a pydantic model of the body, the SQLAlchemy 2 async ORM, and one
transaction per request (committed, `synchronous=FULL` / `synchronous_commit=on`, before the 200).
Same jobs table, same secret check, same state change and event-log row as segflow's."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from fastapi import FastAPI, Header, Response
from pydantic import BaseModel
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.webhook_secrets import WebhookSecrets


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(primary_key=True)
    state: Mapped[str]
    task_id: Mapped[str | None]
    output_urls: Mapped[str]
    completed_at: Mapped[float | None]
    lease_until: Mapped[float | None]
    next_check_at: Mapped[float | None]
    updated_at: Mapped[float]


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str]
    at: Mapped[float]
    event: Mapped[str]
    from_state: Mapped[str]
    to_state: Mapped[str]
    source: Mapped[str]
    detail: Mapped[str | None]


class Output(BaseModel):
    image_url: str | None = None
    image_urls: list[str] = []


class Task(BaseModel):
    task_id: str
    model: str
    task_type: str
    status: str
    output: Output | None = None


class Webhook(BaseModel):
    timestamp: int
    data: Task


def peer_app(database_url: str, key: str) -> FastAPI:
    if database_url.startswith("sqlite:///"):
        engine = create_async_engine("sqlite+aiosqlite:///" + database_url.removeprefix("sqlite:///"))

        @event.listens_for(engine.sync_engine, "connect")
        def durable(conn: Any, _record: Any) -> None:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")

    else:
        engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=20)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    secrets = WebhookSecrets([key.encode()])
    app = FastAPI()

    @app.post("/webhooks/qubico/{job_id}/{attempt}")
    async def hook(job_id: str, attempt: int, body: Webhook, x_webhook_secret: str = Header("")) -> Response:
        if not hmac.compare_digest(x_webhook_secret.encode(), secrets.derive(job_id, attempt).encode()):
            return Response(status_code=401)
        async with sessions.begin() as session:  # one transaction, committed before the answer
            job = (await session.execute(select(Job).where(Job.id == job_id).with_for_update())).scalar_one_or_none()
            if job is None or job.task_id != body.data.task_id:
                return Response(status_code=404)
            if job.state == "submitted" and body.data.status == "completed":
                now = time.time()
                urls = body.data.output.image_urls if body.data.output else []
                job.state, job.output_urls, job.completed_at = "fetching", json.dumps(urls), now
                job.lease_until, job.next_check_at, job.updated_at = 0.0, None, now
                detail = json.dumps({"task_id": job.task_id, "status": body.data.status, "attempt": 1})
                session.add(Event(job_id=job_id, at=now, event="completed", from_state="submitted",
                                  to_state="fetching", source="webhook", detail=detail))  # fmt: skip
        return Response(b'{"status":"applied"}', media_type="application/json")

    return app
