"""Decode cost per webhook body: segflow's strict decoder against a plain orjson parse, same run.

    .venv/bin/python -m benchmarks.decode [--against PATH]

`--against` also measures another version of `service/upstream/wire.py` (e.g. one from `git show
517bcca:service/upstream/wire.py > /tmp/wire_before.py`), interleaved with this one in the same run.
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


def per_call_us(fn: Callable[[bytes], Any], body: bytes, *, n: int = 20_000, rounds: int = 3) -> float:
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
    parser.add_argument("--against", help="path of another wire.py to measure in the same run")
    args = parser.parse_args()
    sides: dict[str, Callable[[bytes], Any]] = {"orjson.loads": orjson.loads, "decode_webhook": wire.decode_webhook}
    if args.against:
        sides[f"decode_webhook ({args.against})"] = load(args.against).decode_webhook
    for name, fn in sides.items():
        if name != "orjson.loads":
            assert fn(BODY).task.output_urls, name  # it decodes: measuring an error path would prove nothing
    # Interleaved rounds, so that machine noise hits every side alike.
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(5):
        for name, fn in sides.items():
            times[name].append(per_call_us(fn, BODY))
    plain = statistics.median(times["orjson.loads"])
    print(f"webhook body {len(BODY)} bytes, median of 5 interleaved rounds:")
    for name, values in times.items():
        us = statistics.median(values)
        print(f"  {name:<50} {us:7.2f} us  ({us / plain:.2f}x plain)")


if __name__ == "__main__":
    main()
