"""Markdown for bench/RESULTS.md from the JSON the benchmarks wrote.

    python bench/report.py bench/model.json bench/service.json >> bench/RESULTS.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_model  # noqa: E402
import bench_service  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for path in sys.argv[1:]:
        result = json.loads(Path(path).read_text())
        print((bench_service.markdown if "cells" in result else bench_model.markdown)(result))


if __name__ == "__main__":
    main()
