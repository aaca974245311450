"""PostgreSQL's binary COPY format for metric chunk rows, built with numpy.

asyncpg encodes array parameters element by element (about 0.5 µs an element here, so
15 ms for the three columns of a 10,000-point batch); laying out the COPY stream with
numpy takes a fraction of a millisecond. The elements of all chunks of a batch are laid
out at once, three numpy calls per batch, and each chunk's arrays are slices of them:
laying them out per key cost about 45 µs a key (0.45 ms for a batch of 10 keys). Format:
PostgreSQL docs, "COPY", "Binary Format", and the binary send format of arrays
(array_send).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = _SIGNATURE + struct.pack(">ii", 0, 0)  # no flags, no header extension
TRAILER = struct.pack(">h", -1)
INT8_OID = 20
FLOAT8_OID = 701
CHUNK_COLUMNS = ("run_id", "key", "min_step", "max_step", "steps", "values", "timestamps_ms")
_ELEMENT = 12  # an array element: its length (int32), then its 8 bytes
_ARRAY_HEADER = struct.Struct(">iiiIii")  # field length, ndim, has nulls, oid, length, lbound
_INT8_FIELD = struct.Struct(">iq")
_BOUNDS = struct.Struct(">iqiq")


def chunk_stream(
    run_id: uuid.UUID,
    keys: Sequence[str],
    bounds: Sequence[tuple[int, int]],
    steps: np.ndarray,
    values: np.ndarray,
    timestamps: np.ndarray,
) -> bytearray:
    """A whole COPY ... (FORMAT binary) input of metric_chunks rows (CHUNK_COLUMNS), one
    per key: key i holds the points bounds[i] = (start, end) of the columns. Appended
    to one buffer: a list of each key's ten parts, joined, took 12 times the stream's
    size for one-point keys (195 MB and 0.47 s for 100,000 keys; now 21 MB, 0.17 s)."""
    step_elements = memoryview(_elements(steps, ">i8"))
    value_elements = memoryview(_elements(values, ">f8"))
    timestamp_elements = memoryview(_elements(timestamps, ">i8"))
    run = struct.pack(">hi", len(CHUNK_COLUMNS), 16) + run_id.bytes
    stream = bytearray(HEADER)
    for key, (start, end) in zip(keys, bounds, strict=True):
        count, first, last = end - start, start * _ELEMENT, end * _ELEMENT
        stream += run
        stream += text_field(key)
        stream += _BOUNDS.pack(8, int(steps[start]), 8, int(steps[end - 1]))
        stream += _array_header(INT8_OID, count)
        stream += step_elements[first:last]
        stream += _array_header(FLOAT8_OID, count)
        stream += value_elements[first:last]
        stream += _array_header(INT8_OID, count)
        stream += timestamp_elements[first:last]
    stream += TRAILER
    return stream


def text_field(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _elements(values: np.ndarray, wire_dtype: str) -> bytes:
    """Array elements without NULLs: (length 8, big-endian value) for each value."""
    elements = np.empty(len(values), dtype=[("length", ">i4"), ("value", wire_dtype)])
    elements["length"] = 8
    elements["value"] = values
    return elements.tobytes()


def _array_header(element_oid: int, count: int) -> bytes:
    """A one-dimensional array field's length and header, before its elements."""
    return _ARRAY_HEADER.pack(20 + count * _ELEMENT, 1, 0, element_oid, count, 1)
