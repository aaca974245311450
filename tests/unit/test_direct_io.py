from pathlib import Path

import pytest

from cairn import _direct_io
from cairn._direct_io import BLOCK, DirectWriter


def test_a_writer_is_closed_only_once_its_last_blocks_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close told the writer closed before it wrote its buffered blocks through the
    descriptor: a check of `closed` took close's own last write for one into a
    descriptor given back (a cancelled download's test failed 1 run in 4)."""
    closed_as_written = []
    write = DirectWriter._write_blocks

    def recorded(writer: DirectWriter, count: int) -> None:
        closed_as_written.append(writer.closed)
        write(writer, count)

    monkeypatch.setattr(DirectWriter, "_write_blocks", recorded)
    # Buffered as around the page cache, which not every file system allows: the
    # writes are plain ones all the same.
    monkeypatch.setattr(_direct_io, "_enable_direct", lambda descriptor: True)
    out = DirectWriter.create(tmp_path / "f.bin")
    out.write(bytes(BLOCK))
    out.close()
    assert (closed_as_written, out.closed) == ([False], True)
    assert (tmp_path / "f.bin").read_bytes() == bytes(BLOCK)
