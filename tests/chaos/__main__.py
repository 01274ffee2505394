"""`python -m tests.chaos --profile short|long`: the chaos soak (see tests/chaos/runner.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.chaos.runner import PROFILES, soak
from tests.fixtures.database import DSN_VARIABLE


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--profile", choices=sorted(PROFILES), default="short")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--postgres", default=os.environ.get(DSN_VARIABLE, "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--workdir", type=Path, help="where logs and artifacts go (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segflow-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"chaos: profile {args.profile}, seed {args.seed}, logs in {workdir}", flush=True)
    report = asyncio.run(soak(PROFILES[args.profile], seed=args.seed, workdir=workdir, admin_dsn=args.postgres))
    print(report.render())
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
