"""Adversarial tests: property-based, schema-driven, SSRF, hostile bodies, secrets (issue 7)."""
