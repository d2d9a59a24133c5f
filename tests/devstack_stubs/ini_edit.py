"""Edit an ini file the way devstack's iniset and iniset_multiline do.

    ini_edit.py set FILE SECTION OPTION VALUE
    ini_edit.py multi FILE SECTION OPTION [VALUE ...]

A missing file or section is created; an option already in the section gets
its new value in place; a new option goes right below the section header.
Comments and the other lines are kept as they are.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADER = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$")


def _section_bounds(lines: list[str], section: str) -> tuple[int, int] | None:
    """Index of the header line of ``section`` and of the line that ends it."""
    start = None
    for index, line in enumerate(lines):
        match = HEADER.match(line)
        if match is None:
            continue
        if start is not None:
            return start, index
        if match.group("name") == section:
            start = index
    return None if start is None else (start, len(lines))


def _option_at(line: str, option: str) -> bool:
    return re.match(rf"^{re.escape(option)}[ \t]*=", line) is not None


def edit(path: Path, section: str, option: str, values: list[str], multi: bool) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    bounds = _section_bounds(lines, section)
    if bounds is None:
        lines += ["", f"[{section}]"]
        bounds = (len(lines) - 1, len(lines))
    start, end = bounds
    body = lines[start + 1 : end]
    if multi:
        body = [line for line in body if not _option_at(line, option)]
        body = [f"{option} = {value}" for value in values] + body
    else:
        (value,) = values
        for index, line in enumerate(body):
            if _option_at(line, option):
                body[index] = f"{option} = {value}"
                break
        else:
            body.insert(0, f"{option} = {value}")
    lines[start + 1 : end] = body
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    command, path, section, option, *values = argv
    if command == "set" and len(values) != 1:
        raise SystemExit("set needs exactly one value")
    edit(Path(path), section, option, values, multi=command == "multi")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
