"""Read CSV, Parquet and JSON Lines files in batches of about ``BATCH_ROWS`` rows.

Flat rows come out as Arrow tables of string columns named as in the file, so
every kind parses values one way whatever the format. Each row carries its
position for error reports: the physical line for CSV (header = line 1, counting
newlines inside quoted values), the line for JSON Lines, the 1-based row for Parquet.
Rows the reader cannot split (a CSV line with the wrong number of fields, a line
that is not JSON) are reported as ``ReadProblem`` and never stop the import.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from opencdp.errors import TerminalError
from opencdp.ingest.imports.mapping import Options

BATCH_ROWS = 50_000
FORMATS = ("csv", "parquet", "jsonl")
_ALIASES = {
    "csv": "csv",
    "tsv": "csv",
    "txt": "csv",
    "parquet": "parquet",
    "pq": "parquet",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "jsonl",
}
_SAMPLE_BYTES = 1 << 20
BLOCK_BYTES = 1 << 20
"""CSV block size: small, because pyarrow reads ahead dozens of blocks; also the longest row allowed."""
_MAX_PAYLOAD = 65_536
_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode

Positions = npt.NDArray[np.int64]


class UnreadableFile(TerminalError):
    code = "unreadable_file"


@dataclass
class ReadProblem:
    position: int | None
    error: str
    detail: str
    payload: str


@dataclass
class Chunk:
    positions: Positions
    rows: int
    """Rows read from the file (JSON orders count objects, not their exploded lines)."""
    table: pa.Table | None = None
    """String columns named as in the file (flat rows)."""
    records: list[Any] | None = None
    """Decoded JSON objects as they are (the events kind reads nested Segment messages)."""
    problems: list[ReadProblem] = field(default_factory=list)


def detect_format(path: Path, format: str | None) -> str:
    if format:
        found = _ALIASES.get(format.strip().lower().lstrip("."))
        if found is None:
            raise UnreadableFile(
                f"unknown format {format!r}; use one of {', '.join(FORMATS)}", field="format", code="unknown_format"
            )
        return found
    suffixes = [s.lower().lstrip(".") for s in path.suffixes]
    if suffixes and suffixes[-1] in ("gz", "gzip"):
        suffixes.pop()
    found = _ALIASES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise UnreadableFile(
            f"cannot tell the format of {path.name} from its name; name it .csv, .parquet or .jsonl, "
            f"or pass the format ({', '.join(FORMATS)})",
            field="format",
            code="unknown_format",
        )
    return found


class Reader:
    """Iterates a file's chunks; ``columns`` is known before the first chunk is read."""

    columns: list[str]

    def __iter__(self) -> Iterator[Chunk]:
        raise NotImplementedError


def open_reader(path: Path, fmt: str, options: Options, *, nested: bool = False, explode: bool = False) -> Reader:
    """A reader for ``path``; ``nested`` keeps JSON objects whole, ``explode`` splits orders' products."""
    if not path.exists():
        raise UnreadableFile(f"file not found: {path}", field="file", code="file_not_found")
    if path.is_dir():
        raise UnreadableFile(f"{path} is a directory; give the path of one file", field="file")
    if fmt == "csv":
        return CsvReader(path, options)
    if fmt == "parquet":
        return ParquetReader(path)
    return JsonReader(path, nested=nested, explode=explode)


# -- CSV -------------------------------------------------------------------------
class CsvReader(Reader):
    def __init__(self, path: Path, options: Options) -> None:
        self.path = path
        self.encoding = options.encoding
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise UnreadableFile(f"unknown encoding {self.encoding!r}; use e.g. utf-8 or cp1251", field="encoding") from None
        with _open_binary(path) as stream:
            sample = stream.read(_SAMPLE_BYTES)
        text = sample.decode(self.encoding, errors="replace").lstrip("\ufeff")
        if not text.strip():
            raise UnreadableFile(f"{path.name} is empty; expected a header line with the column names", field="file")
        self.delimiter = options.delimiter or _sniff_delimiter(text, path)
        header = next(csv.reader(io.StringIO(text), delimiter=self.delimiter), [])
        self.columns = header
        if len(set(header)) != len(header):
            twice = sorted({c for c in header if header.count(c) > 1})
            raise UnreadableFile(f"{path.name}: the header names column(s) {', '.join(twice)} more than once", field="file")
        self._skips: deque[tuple[int, str]] = deque()

    def _invalid(self, row: Any) -> str:
        self._skips.append((int(row.number) if row.number is not None else -1, str(row.text)))
        return "skip"

    def __iter__(self) -> Iterator[Chunk]:
        try:
            reader = pcsv.open_csv(
                _input(self.path),
                read_options=pcsv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES, encoding=self.encoding),
                parse_options=pcsv.ParseOptions(
                    delimiter=self.delimiter,
                    newlines_in_values=True,
                    ignore_empty_lines=False,  # blank lines must still count for line numbers
                    invalid_row_handler=self._invalid,
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types={name: pa.string() for name in self.columns},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
            raise UnreadableFile(_csv_error(self.path, error, 2, self.encoding), field="file") from None
        lines = _CsvLines(self.columns, self.delimiter)
        batches: list[pa.RecordBatch] = []
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as error:
                raise UnreadableFile(_csv_error(self.path, error, lines.line_after, self.encoding), field="file") from None
            batches.append(batch)
            rows += batch.num_rows
            if rows >= BATCH_ROWS:  # blocks are small; a chunk gathers ~BATCH_ROWS rows
                yield lines.chunk(pa.Table.from_batches(batches, schema=batch.schema), self._skips)
                batches, rows = [], 0
        if batches:
            yield lines.chunk(pa.Table.from_batches(batches), self._skips)
        tail = lines.finish(self._skips)
        if tail.problems:
            yield tail


class _CsvLines:
    """Physical line numbers of CSV rows.

    The parser reports the rows it skips by *logical* row number (a quoted value
    spanning lines counts once), so positions are built in logical numbers first,
    shifted past skipped rows, then moved by the newlines inside earlier values.
    """

    def __init__(self, columns: list[str], delimiter: str) -> None:
        self.columns = columns
        self.delimiter = delimiter
        self.emitted = 0  # rows the parser returned so far (blank ones included)
        self.skipped = 0  # rows the parser skipped so far
        self.newlines = 0  # newlines inside values of all rows so far

    @property
    def line_after(self) -> int:
        return 2 + self.emitted + self.skipped + self.newlines

    def chunk(self, table: pa.Table, skips: deque[tuple[int, str]]) -> Chunk:
        """The chunk of a parsed batch, placing the skipped rows that come before its end."""
        n = table.num_rows
        logical = 2 + self.emitted + self.skipped + np.arange(n, dtype=np.int64)
        inner = np.zeros(n, dtype=np.int64)
        for column in table.columns:
            if pc.any(pc.match_substring(column, "\n")).as_py():
                inner += np.asarray(pc.count_substring(column, "\n").to_numpy(zero_copy_only=False), dtype=np.int64)
        before = np.cumsum(inner) - inner  # newlines inside earlier rows of this chunk
        extra = np.zeros(n, dtype=np.int64)  # newlines inside skipped rows before each row
        problems: list[ReadProblem] = []
        while skips:
            number, text = skips[0]
            at = int(np.searchsorted(logical, number, side="left"))
            if at == n:
                break  # after this chunk's rows: the next chunk (or the end) places it
            skips.popleft()
            logical[at:] += 1
            self.skipped += 1
            line = number + self.newlines + int(before[at]) + int(extra[at])
            extra[at:] += text.count("\n")
            problem = self._problem(line, text)
            if problem is not None:
                problems.append(problem)
        positions = logical + self.newlines + before + extra
        self.newlines += int(inner.sum()) + (int(extra[-1]) if n else 0)
        self.emitted += n
        keep = _not_blank(table)
        if keep is not None:
            table, positions = table.filter(pa.array(keep)), positions[keep]
        return Chunk(positions, table.num_rows + len(problems), table=table, problems=problems)

    def finish(self, skips: deque[tuple[int, str]]) -> Chunk:
        problems: list[ReadProblem] = []
        while skips:
            number, text = skips.popleft()
            problem = self._problem(number + self.newlines, text)
            self.newlines += text.count("\n")
            if problem is not None:
                problems.append(problem)
        empty = pa.table({c: pa.array([], pa.string()) for c in self.columns})
        return Chunk(np.zeros(0, dtype=np.int64), len(problems), table=empty, problems=problems)

    def _problem(self, line: int, text: str) -> ReadProblem | None:
        if not text.strip():
            return None  # a line of spaces: as harmless as an empty line
        fields = next(csv.reader(io.StringIO(text), delimiter=self.delimiter), [])
        return ReadProblem(
            line,
            "invalid_csv_row",
            f"the line has {len(fields)} field(s) but the header has {len(self.columns)}; "
            "quote values that contain the delimiter or line breaks",
            text[:_MAX_PAYLOAD],
        )


def _not_blank(table: pa.Table) -> npt.NDArray[np.bool_] | None:
    """Mask of rows with at least one non-empty cell (None when all have one).

    Rows without any value (blank lines, a spreadsheet's trailing ``,,,``) are skipped.
    """
    if table.num_rows == 0 or table.num_columns == 0:
        return None
    blank = pc.equal(pc.utf8_length(table.column(0)), 0)
    for column in table.columns[1:]:
        blank = pc.and_(blank, pc.equal(pc.utf8_length(column), 0))
    keep: npt.NDArray[np.bool_] = np.logical_not(np.asarray(blank.to_numpy(zero_copy_only=False), dtype=np.bool_))
    return None if keep.all() else keep


def _sniff_delimiter(text: str, path: Path) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_error(path: Path, error: Exception, line: int, encoding: str) -> str:
    text = str(error)
    if "UTF8" in text or "utf-8" in text.lower() or isinstance(error, UnicodeDecodeError):
        return (
            f"{path.name} is not valid {encoding} text after about line {line}; "
            "set the file's encoding in the mapping options (e.g. encoding = \"cp1251\" for Excel/1C exports)"
        )
    return f"{path.name} cannot be read as CSV after about line {line}: {text}"


# -- Parquet -----------------------------------------------------------------------
class ParquetReader(Reader):
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Buffered reads: a column chunk is read piecewise, not whole (row groups can be large).
            self.file = pq.ParquetFile(path, buffer_size=1 << 20)
        except (pa.ArrowInvalid, OSError) as error:
            raise UnreadableFile(f"cannot read {path.name} as Parquet: {error}", field="file") from None
        self.columns = list(self.file.schema_arrow.names)

    def __iter__(self) -> Iterator[Chunk]:
        done = 0
        for batch in self.file.iter_batches(batch_size=BATCH_ROWS):
            n = batch.num_rows
            table = pa.table({name: _as_text(batch.column(name)) for name in batch.schema.names})
            yield Chunk(np.arange(done + 1, done + n + 1, dtype=np.int64), n, table=table)
            done += n


def _as_text(values: pa.Array) -> pa.Array:
    """A column as text: numbers and times as Arrow formats them, nested values as JSON."""
    kind = values.type
    if pa.types.is_string(kind):
        return values
    if pa.types.is_nested(kind):
        return pa.array([None if v is None else _encode_json(v).decode() for v in values.to_pylist()], pa.string())
    try:
        return pc.cast(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.string())


# -- JSON Lines ----------------------------------------------------------------------
class JsonReader(Reader):
    """JSON Lines (one object per line); a file that starts with ``[`` is read as one array."""

    def __init__(self, path: Path, *, nested: bool, explode: bool) -> None:
        self.path = path
        self.nested = nested
        self.explode = explode
        self._chunks = self._read()
        self._first = next(self._chunks, None)
        table = self._first.table if self._first is not None else None
        self.columns = list(table.column_names) if table is not None else []

    def __iter__(self) -> Iterator[Chunk]:
        if self._first is not None:
            yield self._first
            self._first = None
            yield from self._chunks

    def _read(self) -> Iterator[Chunk]:
        records: list[Any] = []
        positions: list[int] = []
        problems: list[ReadProblem] = []
        for position, raw in self._lines():
            try:
                records.append(_decode_json(raw))
                positions.append(position)
            except (msgspec.DecodeError, UnicodeDecodeError) as error:
                text = raw.decode("utf-8", "replace")[:_MAX_PAYLOAD]
                problems.append(ReadProblem(position, "invalid_json", f"the line is not valid JSON: {error}", text))
            if len(records) + len(problems) >= BATCH_ROWS:
                yield self._chunk(records, positions, problems)
                records, positions, problems = [], [], []
        if records or problems:
            yield self._chunk(records, positions, problems)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        with _open_binary(self.path) as stream:
            head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        with _open_binary(self.path) as stream:
            if head.startswith(b"["):
                # A JSON array is decoded whole: positions are element numbers.
                try:
                    items = _decode_json(stream.read())
                except (msgspec.DecodeError, UnicodeDecodeError) as error:
                    raise UnreadableFile(f"{self.path.name} is not valid JSON: {error}", field="file") from None
                for index, item in enumerate(items if isinstance(items, list) else [items], start=1):
                    yield index, _encode_json(item)
                return
            for number, line in enumerate(stream, start=1):
                if number == 1:
                    line = line.removeprefix(b"\xef\xbb\xbf")
                if line.strip():
                    yield number, line

    def _chunk(self, records: list[Any], positions: list[int], problems: list[ReadProblem]) -> Chunk:
        if self.nested:
            return Chunk(np.asarray(positions, dtype=np.int64), len(records) + len(problems), records=records, problems=problems)
        unreadable = len(problems)
        rows: list[dict[str, Any]] = []
        row_positions: list[int] = []
        for record, position in zip(records, positions, strict=True):
            if not isinstance(record, dict):
                text = _encode_json(record).decode()[:_MAX_PAYLOAD]
                problems.append(ReadProblem(position, "invalid_json", "each line must be a JSON object {...}", text))
                continue
            for row in _explode(record) if self.explode else (record,):
                rows.append(row)
                row_positions.append(position)
        problems.sort(key=lambda p: p.position or 0)
        return Chunk(
            np.asarray(row_positions, dtype=np.int64),
            len(records) + unreadable,
            table=_text_table(rows),
            problems=problems,
        )


def _explode(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per product of a nested order, order fields repeated on each."""
    key = "products" if isinstance(record.get("products"), list) else "lines"
    products = record.get(key)
    if not isinstance(products, list) or not products:
        return [record]
    base = {k: v for k, v in record.items() if k not in ("products", "lines")}
    if "discount" in base and "order_discount" not in base:
        base["order_discount"] = base.pop("discount")  # the order's discount, not a line's
    rows = []
    for product in products:
        row = dict(base)
        if isinstance(product, dict):
            if "product_id" not in product and "id" in product:
                product = {("product_id" if k == "id" else k): v for k, v in product.items()}
            row.update(product)
        rows.append(row)
    return rows


def _text_table(rows: list[dict[str, Any]]) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        for name in row:
            names.setdefault(name, None)
    return pa.table({name: pa.array([_text(row.get(name)) for row in rows], pa.string()) for name in names})


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _encode_json(value).decode()


# -- files -------------------------------------------------------------------------
def _compressed(path: Path) -> bool:
    return path.suffix.lower() in (".gz", ".gzip")


def _open_binary(path: Path) -> IO[bytes]:
    try:
        if _compressed(path):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as error:
        raise UnreadableFile(f"cannot open {path}: {error.strerror or error}", field="file") from None


def _input(path: Path) -> Any:
    return pa.input_stream(str(path), compression="gzip" if _compressed(path) else None)
