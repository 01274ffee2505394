"""Decode cost per webhook body: segflow's strict decoder against a plain orjson parse, same run.

    .venv/bin/python -m benchmarks.decode [--wire PATH]

`--wire` loads another version of `service/upstream/wire.py` (e.g. one from `git show`) to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from service.upstream import wire

BODY = (Path(__file__).resolve().parents[1] / "tests" / "data" / "upstream" / "webhook-completed.json").read_bytes()


def per_call_us(fn: Callable[[bytes], Any], body: bytes, *, n: int = 20_000, rounds: int = 7) -> float:
    """Median over `rounds` of the mean time per call, in µs."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            fn(body)
        times.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(times)


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("wire_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wire", help="path of a wire.py to measure instead of the installed one")
    args = parser.parse_args()
    module = load(args.wire) if args.wire else wire
    decode = module.decode_webhook
    assert decode(BODY).task.output_urls  # the body decodes: measuring an error path would prove nothing
    # Interleaved so that machine noise hits both sides alike.
    plain, strict = [], []
    for _ in range(3):
        plain.append(per_call_us(orjson.loads, BODY))
        strict.append(per_call_us(decode, BODY))
    p, s = statistics.median(plain), statistics.median(strict)
    print(f"webhook body {len(BODY)} bytes: orjson.loads {p:.2f} µs, decode_webhook {s:.2f} µs ({s / p:.2f}x plain)")


if __name__ == "__main__":
    main()
