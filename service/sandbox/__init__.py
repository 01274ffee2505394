"""The sandbox: a local implementation of the Qubico unified task API for "segment" tasks (test mode).

Choices where the contract is silent:
- Cancel (DELETE) ends a pending task as `failed` with error "task cancelled by user", because only
  `completed` and `failed` are final in the contract; other states answer 400.
- Every random decision is a hash of (seed, kind, key). A create's key is a fingerprint of its image
  URL path and query (not the host, so loopback ports do not matter), prompt, negative prompt and
  segment factor, plus how many times that fingerprint was seen; tasks and webhooks derive their keys
  from it. Task ids and output names are random UUIDs so they never collide across runs.
- Credit is held at create and given back when a task fails; stats bill completed tasks only.
- Masks are synthetic shapes, never a segmentation; each PNG says so in a tEXt chunk.
"""
