"""segflow's Python client: `Client` (sync) and `AsyncClient`, typed answers and errors, retries
that honour Retry-After, an automatic Idempotency-Key on batch creation, and `verify_callback`
for receivers of segflow's signed callbacks.

    from service.client import Client
    with Client("http://127.0.0.1:8600", api_key) as sf:
        batch = sf.create_batch(items=[{"image": url, "prompt": "car"}])
"""

from service.client.clients import AsyncClient, Client
from service.client.core import OPERATIONS, RetryPolicy
from service.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InvalidSignature,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SegflowError,
    ServerError,
    Unauthorized,
    ValidationFailed,
)
from service.client.verify import verify_callback

__all__ = [
    "OPERATIONS",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "InvalidSignature",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "SegflowError",
    "ServerError",
    "Unauthorized",
    "ValidationFailed",
    "verify_callback",
]
