"""Rebuild the generated parts of benchmarks/README.md: the table of scripts (each script's first
docstring paragraph and the results files its command wrote) and the results section (every
benchmarks/results/*.md), so neither drifts from what is there.

    python benchmarks/collect.py
"""
import ast
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ["weightmap", "augmentation", "inference", "validation", "metrics", "isbi2012", "instances", "export", "gpu"]
HELPERS = {"_common", "collect", "torch_unet"}  # imported by the scripts, not run for a table


def replaced(text: str, name: str, body: str) -> str:
    """``text`` with what lies between the ``<!-- NAME: start -->`` and ``<!-- NAME: end -->``
    markers replaced by ``body``."""
    start, end = f"<!-- {name}: start -->", f"<!-- {name}: end -->"
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}"


def scripts_table() -> str:
    """A Markdown table of the scripts: what each measures (its docstring's first paragraph) and
    the results files whose command line names it."""
    commands = {table.stem: table.read_text().split("\n")[2] for table in RESULTS.glob("*.md")}
    lines = ["| script | what it measures | results |", "|---|---|---|"]
    for script in sorted(HERE.glob("*.py")):
        if script.stem in HELPERS:
            continue
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        what = re.sub(r"\s+", " ", doc.split("\n\n")[0]).strip().replace("|", "\\|")
        tables = sorted(stem for stem, command in commands.items() if f"benchmarks/{script.name}" in command)
        lines.append(f"| `{script.name}` | {what} | {', '.join(f'`{t}.md`' for t in tables) or '-'} |")
    return "\n".join(lines) + "\n"


def main():
    readme = HERE / "README.md"
    tables = sorted(RESULTS.glob("*.md"), key=lambda p: ORDER.index(p.stem) if p.stem in ORDER else 99)
    text = replaced(readme.read_text(), "scripts", scripts_table())
    readme.write_text(replaced(text, "results", "\n".join(p.read_text() for p in tables)))


if __name__ == "__main__":
    main()
