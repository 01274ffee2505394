"""A serverless receiver of segflow callbacks: a plain `handler(event, context)` function, as AWS
Lambda (function URL or API Gateway proxy) calls it; other platforms pass the same three things.

It verifies the signature, drops duplicates by `webhook-id`, and for `job.succeeded` fetches the
mask with the segflow client. Configuration comes from the environment:

  SEGFLOW_CALLBACK_SECRET  the subscription's `whsec_…` secret (comma-separated during a rotation)
  SEGFLOW_API_URL, SEGFLOW_API_KEY  where to fetch masks
  MASK_DIR                 where to put them;  SEEN_DB  the file of handled webhook ids
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from dedupe import Seen

from service.client import Client, InvalidSignature, SegflowError, verify_callback


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    headers = event.get("headers") or {}
    try:
        payload = verify_callback(headers, raw, os.environ["SEGFLOW_CALLBACK_SECRET"].split(","))
    except InvalidSignature:
        return {"statusCode": 401, "body": "bad signature"}
    seen = Seen(os.environ["SEEN_DB"])
    if not seen.claim(payload["id"]):
        return {"statusCode": 200, "body": "duplicate"}
    try:
        if payload["type"] == "job.succeeded":
            data = payload["data"]
            with Client(os.environ["SEGFLOW_API_URL"], os.environ["SEGFLOW_API_KEY"]) as segflow:
                mask = segflow.get_job_mask(data["job_id"])
            folder = Path(os.environ["MASK_DIR"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{data['job_id']}.png").write_bytes(mask)
    except (SegflowError, OSError):
        seen.release(payload["id"])  # segflow retries; the retry is handled
        return {"statusCode": 500, "body": "failed"}
    return {"statusCode": 200, "body": "ok"}
