"""Tables read and written in blocks, so memory stays bounded whatever the number of rows.

* :func:`coords_rows` / :func:`iter_coords` — a query CSV with columns x, y, z (µm), validated
  block by block (errors name the file and the row).
* :func:`format_csv_block` — numbers → CSV bytes in numpy (6 significant digits, as ``%.6g``;
  NaN → an empty field), ~30× faster than ``pandas.to_csv``.
* Table writers (:class:`CsvTableWriter`), chosen by the output's suffix through
  :data:`TABLE_WRITERS` / :func:`table_writer_for`: ``open`` (temporary file beside the target),
  ``write(block)`` any number of times, ``commit()`` (atomic rename) or ``abort()`` (nothing left).
  Another format (e.g. AnnData ``.h5ad``) is one more class with the same four methods and
  ``estimate_bytes`` registered in :data:`TABLE_WRITERS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError

#: values (rows × columns) evaluated and written per block: bounds predict's memory (~150 B each)
BLOCK_VALUES = 1_000_000


# --- query coordinates -------------------------------------------------------------------------
def _xyz_columns(path: Path) -> list:
    import pandas as pd

    try:
        head = pd.read_csv(path, nrows=0)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for unreadable files
        raise InputError(path, f"not a readable CSV ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    return find_columns(path, head.columns, "xyz")


def find_columns(path, columns, names: str = "xyz") -> list:
    """The columns named ``names`` (one letter each; any case, spaces around ignored) among
    ``columns``, in that order; InputError naming ``path`` and what is missing otherwise."""
    cols = {str(c).strip().lower(): c for c in columns}
    missing = [c for c in names if c not in cols]
    if missing:
        raise InputError(path, f"needs columns {', '.join(names)}; missing {', '.join(missing)} "
                               f"(columns: {', '.join(map(str, columns)) or 'none'})")
    return [cols[c] for c in names]


def coords_rows(path) -> int:
    """Number of data rows of a query CSV (lines after the header; the header is checked)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a CSV file")
    _xyz_columns(path)
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(1 << 24)
            if not buf:
                break
            n += buf.count(b"\n")
            last = buf[-1:]
    if last != b"\n":
        n += 1  # no newline after the last line
    return max(n - 1, 0)


def iter_coords(path, block_rows: int = 262_144) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, xyz)`` blocks of a CSV with columns x, y, z (any order and case;
    float64). Non-numbers and missing or non-finite values raise InputError naming the file and
    the line."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    cols = _xyz_columns(path)
    r0 = 0
    try:
        reader = pd.read_csv(path, usecols=cols, chunksize=int(block_rows), skip_blank_lines=True)
        for df in reader:
            try:
                xyz = df[cols].to_numpy(dtype=np.float64)
            except (ValueError, TypeError):
                bad = next(i for i in range(len(df)) if not _row_numeric(df.iloc[i]))
                raise InputError(path, f"line {r0 + bad + 2}: columns x, y, z must be numbers") from None
            finite = np.isfinite(xyz).all(axis=1)
            if not finite.all():
                raise InputError(path, f"line {r0 + int(np.argmin(finite)) + 2} has a missing or non-finite coordinate")
            yield r0, xyz
            r0 += len(xyz)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed line further down
        raise InputError(path, f"not a readable CSV ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None


def _row_numeric(row) -> bool:
    try:
        np.asarray(row, dtype=np.float64)
        return True
    except (ValueError, TypeError):
        return False


def read_coords(path) -> np.ndarray:
    """The whole (n, 3) float64 array of a query CSV (small files; see :func:`iter_coords`)."""
    blocks = [xyz for _, xyz in iter_coords(path)]
    return np.concatenate(blocks) if blocks else np.zeros((0, 3))


# --- fast CSV formatting -----------------------------------------------------------------------
_W = 14  # bytes per formatted value: sign + up to 12 characters + separator (the last slot)
_E_MIN, _E_MAX = -330, 310
with np.errstate(over="ignore"):
    _POW10 = 10.0 ** np.arange(_E_MIN - 6, _E_MAX + 7, dtype=np.float64)
_DIGITS = 6
_T3 = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)  # 0…999 → 3 bytes
_TZ3 = np.array([3 if i == 0 else len(f"{i:03d}") - len(f"{i:03d}".rstrip("0")) for i in range(1000)],
                dtype=np.int64)  # trailing zeros of 3 digits


def _build_templates():
    """For each (neg, exponent, significant digits) a row of _W + 1 bytes (constants, 0 = nothing)
    and where its digits 0…5 go (_W = the discarded slot). %g rules: fixed notation for
    -4 ≤ e < 6, else d.ddddde±XX."""
    n_e = _E_MAX - _E_MIN + 1
    n = 2 * n_e * _DIGITS + 4
    const = np.zeros((n, _W + 1), dtype=np.uint8)
    dslot = np.full((n, _DIGITS), _W, dtype=np.uint8)

    def put(row, items):
        for j, it in enumerate(items):
            if isinstance(it, int):
                dslot[row, it] = j
            else:
                const[row, j] = ord(it)

    for neg in (0, 1):
        for ei, e in enumerate(range(_E_MIN, _E_MAX + 1)):
            for nd in range(1, _DIGITS + 1):
                row = (neg * n_e + ei) * _DIGITS + (nd - 1)
                items: list = ["-"] if neg else []
                if -4 <= e < 0:
                    items += ["0", "."] + ["0"] * (-e - 1) + list(range(nd))
                elif 0 <= e < _DIGITS:
                    p = max(nd, e + 1)
                    items += list(range(e + 1))
                    if p > e + 1:
                        items += ["."] + list(range(e + 1, p))
                else:
                    items += [0] + (["."] + list(range(1, nd)) if nd > 1 else [])
                    items += ["e", "-" if e < 0 else "+"] + list(f"{abs(e):02d}")
                put(row, items)
    special = 2 * n_e * _DIGITS
    put(special + 0, ["0"])  # zero
    put(special + 1, [])  # NaN: empty field
    put(special + 2, list("inf"))
    put(special + 3, list("-inf"))
    return const, [np.ascontiguousarray(dslot[:, k]) for k in range(_DIGITS)], special


_TEMPLATES = None


def format_csv_block(values, *, header: Sequence[str] | None = None) -> bytes:
    """(rows, cols) numbers → CSV lines (``,``-separated, ``\\n``-terminated): 6 significant
    digits like ``%.6g``, trailing zeros dropped, NaN as an empty field. Vectorized in numpy."""
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = _build_templates()
    const, dslot, special = _TEMPLATES
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"expected a 2D block, got shape {v.shape}")
    rows, cols = v.shape
    head = b""
    if header is not None:
        head = (",".join(_csv_name(h) for h in header) + "\n").encode()
    if rows == 0 or cols == 0:
        return head + b"\n" * rows
    x = v.astype(np.float64, copy=False).ravel()
    a = np.abs(x)
    ok = np.isfinite(a) & (a > 0)
    safe = np.where(ok, a, 1.0)
    e = np.floor(np.log10(safe)).astype(np.int64)
    np.clip(e, _E_MIN, _E_MAX, out=e)
    m = np.rint(safe / _POW10[e - (5 + _E_MIN - 6)]).astype(np.int64)
    for _ in range(2):  # log10 off by one near powers of ten, or rounding up to 10^6
        hi = m >= 10 ** _DIGITS
        lo = m < 10 ** (_DIGITS - 1)
        if not (hi.any() or lo.any()):
            break
        e = np.clip(e + hi - lo, _E_MIN, _E_MAX)
        m = np.rint(safe / _POW10[e - (5 + _E_MIN - 6)]).astype(np.int64)
    np.clip(m, 10 ** (_DIGITS - 1), 10 ** _DIGITS - 1, out=m)
    hi, lo = np.divmod(m, 1000)
    tz = np.where(lo == 0, 3 + _TZ3[hi], _TZ3[lo])
    n_e = _E_MAX - _E_MIN + 1
    tid = ((x < 0) * n_e + (e - _E_MIN)) * _DIGITS + (_DIGITS - 1 - tz)
    if not ok.all():
        tid[a == 0] = special
        tid[np.isnan(x)] = special + 1
        tid[np.isposinf(x)] = special + 2
        tid[np.isneginf(x)] = special + 3
    out = const[tid]  # (n, _W + 1): constants; the digits go in next, column by column
    flat = out.ravel()
    base = np.arange(0, flat.size, _W + 1, dtype=np.int64)
    d_hi, d_lo = _T3[hi], _T3[lo]
    for k in range(_DIGITS):
        flat[base + dslot[k][tid]] = (d_hi if k < 3 else d_lo)[:, k % 3]
    out[:, _W] = 0  # the slot unused digits went to
    out[:, _W - 1] = ord(",")  # the separator: ',' or '\\n' at the end of a row
    out.reshape(rows, cols, _W + 1)[:, -1, _W - 1] = ord("\n")
    return head + flat[flat != 0].tobytes()


def _csv_name(name) -> str:
    s = str(name)
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


# --- table writers -----------------------------------------------------------------------------
class TableWriter:
    """Rows of numbers in blocks → one file, atomically. Subclasses implement ``_open``,
    ``_write`` and ``_finish`` on ``self.tmp`` (a temporary path beside the target) and
    ``estimate_bytes``."""

    suffixes: tuple = ()

    def __init__(self, path, columns: Sequence[str], n_rows: int | None = None):
        self.path = Path(path)
        self.columns = [str(c) for c in columns]
        self.n_rows = n_rows
        self.rows_written = 0
        self._cm = None
        self.tmp = None

    @classmethod
    def estimate_bytes(cls, n_rows: int, n_cols: int) -> int:
        raise NotImplementedError

    def open(self):
        from .atomic import atomic_path

        self._cm = atomic_path(self.path)
        self.tmp = self._cm.__enter__()
        self._guard(self._open)
        return self

    def _guard(self, fn, *args):
        """Run ``fn``; on any error remove everything (an OSError becomes an InputError naming the
        target: read-only filesystem, disk full, …)."""
        from .atomic import write_error

        try:
            fn(*args)
        except OSError as exc:
            self.abort()
            raise write_error(self.path, exc) from None
        except BaseException:
            self.abort()
            raise

    def write(self, block: np.ndarray):
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != len(self.columns):
            raise ValueError(f"block of shape {block.shape} for {len(self.columns)} columns")
        self._guard(self._write, block)
        self.rows_written += len(block)

    def commit(self):
        self._guard(self._finish)
        cm, self._cm = self._cm, None
        cm.__exit__(None, None, None)  # the atomic rename (errors: InputError, temporary removed)
        return self.path

    def abort(self):
        """Remove the temporary file (and folders made for the target); safe to call twice."""
        cm, self._cm = self._cm, None
        self._close_quietly()
        if cm is not None:
            try:
                raise _Aborted
            except _Aborted as exc:
                try:
                    cm.__exit__(_Aborted, exc, exc.__traceback__)
                except _Aborted:
                    pass

    def _close_quietly(self):
        pass

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


class _Aborted(Exception):
    pass


class CsvTableWriter(TableWriter):
    """CSV: a header of column names, one line per row, ``%.6g``-like numbers, NaN empty."""

    suffixes = (".csv",)

    @classmethod
    def estimate_bytes(cls, n_rows: int, n_cols: int) -> int:
        return int(n_rows) * int(n_cols) * 13 + 64 * int(n_cols)  # ≤ 12 characters + separator

    def _open(self):
        self._fh = open(self.tmp, "wb")
        self._fh.write(format_csv_block(np.zeros((0, len(self.columns))), header=self.columns))

    def _write(self, block):
        self._fh.write(format_csv_block(block))

    def _finish(self):
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def _close_quietly(self):
        fh = getattr(self, "_fh", None)
        if fh is not None and not fh.closed:
            try:
                fh.close()
            except OSError:
                pass


#: output suffix → writer class (anything else: CSV)
TABLE_WRITERS: dict[str, type] = {".csv": CsvTableWriter}


#: suffixes of binary formats that no registered writer handles: refused rather than written as CSV
_NOT_CSV = (".h5ad", ".h5", ".hdf5", ".zarr", ".parquet", ".npy", ".npz", ".xlsx", ".png", ".tif", ".tiff")


def table_writer_for(path) -> type:
    """The writer class for ``path`` by its suffix (CSV when the suffix is not registered; an
    InputError for the suffix of a binary format no writer handles)."""
    suffix = Path(path).suffix.lower()
    if suffix in TABLE_WRITERS:
        return TABLE_WRITERS[suffix]
    if suffix in _NOT_CSV:
        known = ", ".join(sorted(TABLE_WRITERS))
        raise InputError(path, f"cannot write {suffix} here; give a file ending in {known} (or .h5ad for AnnData)")
    return CsvTableWriter
