"""`make bench`: every benchmark under bench/, one after the other, printing plain figures.

Each runs in its own process so one's model and database state cannot colour another's timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "ingest_bench.py",
    "encoder_bench.py",  # torch vs the int8 ONNX export: raw encode and end to end, side by side
    "queue_bench.py",  # the same documents in-process and through a real worker on the folder queue
    # --compare: the previous full-text statement beside the current one, latency and dev-set quality
    "retrieval_bench.py --compare",
    "answer_bench.py",
    "load_answers.py",  # 100, 200 and 500 streamed answers at once, each way of asking
]


def main() -> int:
    failed = 0
    for line in BENCHMARKS:
        name, *options = line.split()
        path = HERE / name
        if not path.exists():
            continue
        print(f"== {line}", flush=True)
        failed += subprocess.call([sys.executable, str(path), *options, *sys.argv[1:]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
