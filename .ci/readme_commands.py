"""Print the README's two fresh-machine commands, one per line, as the README writes them.

They are the one-line ```bash blocks under the heading "## Two commands on a fresh machine":
first the main job, then the tests. `.ci/run` runs what this prints, so CI and the README cannot
drift apart; tests/test_readme.py checks the section keeps that shape.
"""
import re
import sys
from pathlib import Path

HEADING = "## Two commands on a fresh machine"


def readme_commands(readme: Path) -> list[str]:
    text = readme.read_text(encoding="utf-8")
    if HEADING not in text:
        raise SystemExit(f"{readme}: no '{HEADING}' section")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [block.strip() for block in blocks]
    if len(commands) != 2 or any("\n" in c for c in commands):
        raise SystemExit(f"{readme}: '{HEADING}' must hold exactly two one-line bash blocks, found {commands!r}")
    return commands


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    print("\n".join(readme_commands(root / "README.md")))
