"""Which file a copy's failure is about. A copy names two files, the one read first and
the one written second (shutil's sendfile, for any failure once bytes went): only a
refusal to find or open the first is the caller's file's (LOCAL_READ_FAILED); any
other failure, a failing or full disk, is the written file's."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cairn._clients._local_files import local_reads, local_writes
from cairn.exceptions import FailedPreconditionError
from cairn.models._flavors import FilesFlavor


def _copy_error(code: int, read: Path, written: Path) -> OSError:
    """A copy's failure as shutil raises it once bytes went: both files named."""
    return OSError(code, os.strerror(code), str(read), None, str(written))


@pytest.mark.parametrize("code", [errno.EIO, errno.EINVAL, errno.ENOSPC], ids=errno.errorcode.get)
def test_a_copy_failing_on_the_file_written_is_no_read_failure(tmp_path: Path, code: int) -> None:
    """An EIO of the disk a model's file was copied to was "could not read <the model's
    file>", LOCAL_READ_FAILED: only a full disk was taken for the written file's."""
    read, written = tmp_path / "model.bin", tmp_path / "scratch" / "model.bin"
    failed = _copy_error(code, read, written)

    with pytest.raises(OSError) as raised, local_reads(read, "left"):
        raise failed

    assert raised.value is failed


@pytest.mark.parametrize(
    "code",
    [errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP, errno.ENOTDIR],
    ids=errno.errorcode.get,
)
def test_a_copy_whose_file_read_cannot_be_opened_is_a_read_failure(
    tmp_path: Path, code: int
) -> None:
    read, written = tmp_path / "model.bin", tmp_path / "scratch" / "model.bin"

    with pytest.raises(FailedPreconditionError) as refused, local_reads(read, "left"):
        raise _copy_error(code, read, written)

    assert refused.value.reason == "LOCAL_READ_FAILED"
    assert refused.value.metadata == {"path": str(read), "errno": errno.errorcode[code]}
    assert str(refused.value).endswith("; left")


def test_a_copy_failing_on_the_file_written_names_it_as_a_write_failure(tmp_path: Path) -> None:
    """A copy's EIO was "could not write <the file read>" (the model cache's, on another
    disk): only a full disk named the file written."""
    read, written = tmp_path / "cache" / "a.bin", tmp_path / "dst" / "a.bin"

    with pytest.raises(FailedPreconditionError) as refused, local_writes(tmp_path / "dst", "kept"):
        raise _copy_error(errno.EIO, read, written)

    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata == {"path": str(written), "errno": "EIO"}


def test_a_model_file_copied_onto_a_failing_disk_is_a_write_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files flavor's copy (log_model, add_model) of a model's file onto a disk that
    failed once the file's bytes went (EIO) was "could not read <the model's file>",
    LOCAL_READ_FAILED: the caller's file blamed for the scratch disk's fault. shutil's
    own copy, with the kernel's sendfile failing at its second call."""
    model, scratch = tmp_path / "model.bin", tmp_path / "scratch"
    model.write_bytes(b"weights")
    scratch.mkdir()
    sendfile, offsets = os.sendfile, []

    def failing_after_the_first_bytes(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        offsets.append(offset)
        if len(offsets) > 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", failing_after_the_first_bytes)
    with pytest.raises(FailedPreconditionError) as refused:
        FilesFlavor().save(model, scratch)

    assert offsets == [0, len(b"weights")]  # the copy went through sendfile, past its start
    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata == {"path": str(scratch / "model.bin"), "errno": "EIO"}
    assert str(refused.value).endswith("; nothing of the model was sent")
