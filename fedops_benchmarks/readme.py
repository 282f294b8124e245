"""Rewrite one marked block of the README (benchmarks regenerate their own tables)."""

from __future__ import annotations

import re
from pathlib import Path


def replace_block(readme: Path, *, begin: str, end: str, lines: list[str]) -> None:
    """Put ``begin``, ``lines``, ``end`` in place of the block between the markers (appended
    when the README has none yet)."""
    block = "\n".join([begin, *lines, end])
    text = readme.read_text()
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)
