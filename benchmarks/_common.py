"""Helpers shared by the benchmark scripts: timing and writing result tables."""
from __future__ import annotations

import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(fn, repeat: int = 3, number: int = 1) -> float:
    """Smallest mean wall time (s) of ``number`` calls over ``repeat`` rounds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def machine() -> str:
    from keras_unet.engines import describe_cpu

    return f"{os.cpu_count()} cores, {describe_cpu()}"


def write_table(name: str, title: str, command: str, header: list[str], rows: list[list], notes: str = "") -> Path:
    """Write ``results/NAME.md``: a Markdown table with the command, date and machine."""
    RESULTS.mkdir(exist_ok=True)
    lines = [f"## {title}", "", f"`{command}` - {time.strftime('%Y-%m-%d')}, {machine()}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if notes:
        lines += ["", notes]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path
