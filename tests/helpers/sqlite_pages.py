"""Find the pages of a table's or index's b-tree in a SQLite file (to damage them on purpose).

A minimal reader of the documented file format (https://sqlite.org/fileformat.html): page 1
holds a 100-byte file header; a b-tree page starts with its type (2/5 interior index/table,
10/13 leaf index/table); interior pages list child page numbers in their cells plus a
right-most pointer at header offset 8.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path


def page_size(path: Path) -> int:
    raw = path.read_bytes()[16:18]
    size = struct.unpack(">H", raw)[0]
    return 65536 if size == 1 else size


def root_pages(path: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            name: int(root)
            for name, root in con.execute(
                "SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"
            )
        }
    finally:
        con.close()


def btree_pages(path: Path, root: int) -> tuple[list[int], list[int]]:
    """(interior pages, leaf pages) of the b-tree rooted at ``root`` (overflow pages not followed)."""
    data = path.read_bytes()
    ps = page_size(path)
    interior: list[int] = []
    leaves: list[int] = []
    todo = [root]
    while todo:
        p = todo.pop()
        base = (p - 1) * ps
        hdr = base + (100 if p == 1 else 0)
        kind = data[hdr]
        if kind in (10, 13):
            leaves.append(p)
            continue
        if kind not in (2, 5):
            raise ValueError(f"page {p}: not a b-tree page (type {kind})")
        interior.append(p)
        ncells = struct.unpack(">H", data[hdr + 3 : hdr + 5])[0]
        todo.append(struct.unpack(">I", data[hdr + 8 : hdr + 12])[0])
        for i in range(ncells):
            off = struct.unpack(">H", data[hdr + 12 + 2 * i : hdr + 14 + 2 * i])[0]
            todo.append(struct.unpack(">I", data[base + off : base + off + 4])[0])
    return interior, leaves


def damage_page(
    path: Path, page: int, *, offset: int = 0, length: int | None = None, byte: int = 0xA5
) -> None:
    """Overwrite ``length`` bytes (default: the whole page) of ``page`` starting at ``offset``."""
    ps = page_size(path)
    length = ps - offset if length is None else length
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * ps + offset)
        fh.write(bytes([byte]) * length)
