"""Reader for the IDX format of (Fashion-)MNIST, plain or gzipped."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from kdcore.errors import DatasetMissingError, KDError

# Third byte of the magic number -> element type (big-endian on disk).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    # Decide by content, not by suffix: some mirrors gunzip files but keep the name.
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise KDError(f"{path} is a damaged gzip file ({err}).") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into an array of native byte order; a file that is not valid IDX raises KDError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError(f"IDX file {path} does not exist.")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise KDError(f"{path} is not an IDX file (bad magic number).")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise KDError(f"{path} is truncated inside its IDX header.")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_len != expected:
        raise KDError(
            f"{path} holds {len(data) - header_len} data bytes but its IDX header {dims} promises {expected}."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)  # writable, native order: torch.from_numpy-ready


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write an array as IDX (gzipped when compress, or when the name ends in .gz); used for tests and exports."""
    path = Path(path)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise KDError(f"IDX cannot store arrays of type {array.dtype}.")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(native.newbyteorder(">")).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path
