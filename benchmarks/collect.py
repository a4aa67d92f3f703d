"""Rebuild the results section of benchmarks/README.md from benchmarks/results/*.md.

    python benchmarks/collect.py
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- results: start -->", "<!-- results: end -->"
ORDER = ["weightmap", "augmentation", "inference", "validation", "metrics", "isbi2012", "instances", "export", "gpu"]


def main():
    readme = HERE / "README.md"
    text = readme.read_text()
    tables = sorted((HERE / "results").glob("*.md"), key=lambda p: ORDER.index(p.stem) if p.stem in ORDER else 99)
    body = "\n".join(p.read_text() for p in tables)
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{body}{END}{tail}")


if __name__ == "__main__":
    main()
