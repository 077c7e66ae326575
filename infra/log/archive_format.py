"""The log archive: Kafka records in a compressed, checksummed file, written and read as a stream.

One format for `stratos log export/import` and for embedded mode's own archive
(`infra/log/archive.py`). A file is a 16-byte header, then blocks; each block holds consecutive
records of one topic partition:

    file header   b"STRATOS-LOG" + version (1 byte, 1) + 4 reserved bytes
    block         fixed header  >4sBHiqIII  magic b"SLB1", kind (1 records, 2 end), topic name
                                length, partition, first offset, record count, raw length,
                                packed length
                  topic name    UTF-8, without the platform's topic prefix ("events")
                  payload       zstd-compressed records (an end block: JSON totals)
                  crc32         of everything above in this block (header, name, payload)
    records       a MessagePack array, one array per record: [offset, timestamp (ms), key
                  (bin or nil), value (bin or nil), [[header name (str), value (bin or nil)], ...]]

MessagePack (C-accelerated here, a specified format with readers in every language) packs a
record ~8 times faster than per-field struct packing did, which made it the archive's cost.

Readers check every block before using it: a bad magic, a checksum mismatch, a short read or
records that do not add up stop the reading with `ArchiveCorrupt`, which names the block, its
byte offset, the topic partition and offset it starts at; every block before it is intact and
has been handed out (its "valid prefix"). Memory is one block at a time, whatever the length.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgpack
import zstandard

FILE_MAGIC = b"STRATOS-LOG"
FORMAT_VERSION = 1
FILE_HEADER = FILE_MAGIC + bytes([FORMAT_VERSION]) + b"\0\0\0\0"
BLOCK_MAGIC = b"SLB1"
RECORDS, END = 1, 2
_BLOCK = struct.Struct(">4sBHiqIII")
_CRC = struct.Struct(">I")
MAX_PACKED_BYTES = 256 << 20
"""A block header claiming more than this is corrupt (a writer never packs that much)."""
BLOCK_RECORDS = 4096
"""A writer closes a block at this many records (or at the end of a fetched batch)."""

Row = tuple  # (offset, timestamp_ms, key, value, headers: list[tuple[str, bytes | None]])


class ArchiveCorrupt(Exception):
    """Where an archive stops being readable: everything before `byte_offset` was valid."""

    def __init__(
        self,
        reason: str,
        *,
        block: int,
        byte_offset: int,
        records_before: int,
        topic: str | None = None,
        partition: int | None = None,
        first_offset: int | None = None,
    ) -> None:
        self.reason, self.block, self.byte_offset = reason, block, byte_offset
        self.records_before, self.topic, self.partition = records_before, topic, partition
        self.first_offset = first_offset
        where = f"block {block} at byte {byte_offset}"
        if topic is not None:
            where += f" ({topic} partition {partition} from offset {first_offset})"
        super().__init__(f"archive corrupt at {where}: {reason}; the {records_before} records before it are intact")

    def as_dict(self) -> dict:
        return {
            "reason": self.reason,
            "block": self.block,
            "byte_offset": self.byte_offset,
            "records_before": self.records_before,
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": self.first_offset,
        }


@dataclass
class Block:
    index: int
    byte_offset: int
    kind: int
    topic: str
    partition: int
    first_offset: int
    rows: list[Row] = field(default_factory=list)
    totals: dict | None = None


def encode_rows(rows: list[Row]) -> tuple[bytes, int]:
    return msgpack.packb(rows), len(rows)


def decode_rows(raw: bytes, count: int) -> list[Row]:
    rows = msgpack.unpackb(raw, use_list=False)
    if not isinstance(rows, tuple) or len(rows) != count:
        raise ValueError(
            f"the block holds {len(rows) if isinstance(rows, tuple) else 'no'} records, its header says {count}"
        )
    return list(rows)


class ArchiveWriter:
    """Appends blocks to an open binary file (a new file gets the file header first)."""

    def __init__(self, out: BinaryIO, level: int = 3) -> None:
        self.out = out
        self.compressor = zstandard.ZstdCompressor(level=level)
        if out.tell() == 0:
            out.write(FILE_HEADER)
        self.records = 0
        self.blocks = 0

    def _block(self, kind: int, topic: str, partition: int, first_offset: int, count: int, raw: bytes) -> None:
        packed = self.compressor.compress(raw)
        name = topic.encode()
        head = _BLOCK.pack(BLOCK_MAGIC, kind, len(name), partition, first_offset, count, len(raw), len(packed))
        crc = zlib.crc32(packed, zlib.crc32(name, zlib.crc32(head)))
        self.out.write(b"".join((head, name, packed, _CRC.pack(crc))))
        self.blocks += 1

    def write_rows(self, topic: str, partition: int, rows: list[Row]) -> None:
        """One block of consecutive records of a partition (nothing for no rows)."""
        if rows:
            raw, count = encode_rows(rows)
            self._block(RECORDS, topic, partition, rows[0][0], count, raw)
            self.records += count

    def write_partition(self, topic: str, partition: int, batches: Iterable[list[Row]]) -> int:
        """Blocks of at most BLOCK_RECORDS from a stream of row lists (each fetched batch is
        bounded in bytes by the reader); returns how many rows."""
        written = 0
        for batch in batches:
            for start in range(0, len(batch), BLOCK_RECORDS):
                self.write_rows(topic, partition, batch[start : start + BLOCK_RECORDS])
            written += len(batch)
        return written

    def write_end(self, totals: dict) -> None:
        """The end marker: a reader that sees it knows the writer finished."""
        self._block(END, "", 0, 0, 0, json.dumps(totals, sort_keys=True).encode())


class ArchiveReader:
    """Iterates the blocks of an archive file; raises ArchiveCorrupt at the first bad one.

    After the iteration, `valid_bytes` is the length of the intact prefix, `records` the number
    of records handed out and `complete` whether the last block read was an end marker."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.valid_bytes = 0
        self.records = 0
        self.blocks = 0
        self.complete = False

    def __iter__(self) -> Iterator[Block]:
        decompressor = zstandard.ZstdDecompressor()
        with self.path.open("rb") as source:
            header = source.read(len(FILE_HEADER))
            if len(header) < len(FILE_HEADER) or not header.startswith(FILE_MAGIC):
                raise ArchiveCorrupt(
                    "not a Stratos-ES log archive (bad file header)", block=0, byte_offset=0, records_before=0
                )
            if header[len(FILE_MAGIC)] != FORMAT_VERSION:
                raise ArchiveCorrupt(
                    f"format version {header[len(FILE_MAGIC)]}, this reader knows {FORMAT_VERSION}",
                    block=0,
                    byte_offset=0,
                    records_before=0,
                )
            position = self.valid_bytes = len(FILE_HEADER)
            index = 0
            while True:
                head = source.read(_BLOCK.size)
                if not head:
                    return
                index += 1

                # this block's number and offset, bound now (both change only after its last check)
                def corrupt(reason: str, *, _index: int = index, _position: int = position, **where) -> ArchiveCorrupt:
                    return ArchiveCorrupt(
                        reason, block=_index, byte_offset=_position, records_before=self.records, **where
                    )

                if len(head) < _BLOCK.size:
                    raise corrupt(f"truncated: {len(head)} of the block header's {_BLOCK.size} bytes")
                magic, kind, name_len, partition, first_offset, count, raw_len, packed_len = _BLOCK.unpack(head)
                if magic != BLOCK_MAGIC or kind not in (RECORDS, END) or packed_len > MAX_PACKED_BYTES:
                    raise corrupt("no block header here (bad magic, kind or length)")
                name = source.read(name_len)
                topic = name.decode("utf-8", "replace")
                where = dict(topic=topic, partition=partition, first_offset=first_offset) if kind == RECORDS else {}
                packed = source.read(packed_len)
                crc = source.read(_CRC.size)
                if len(name) < name_len or len(packed) < packed_len or len(crc) < _CRC.size:
                    raise corrupt(
                        f"truncated: the block needs {_BLOCK.size + name_len + packed_len + 4} "
                        f"bytes, the file ends before",
                        **where,
                    )
                if zlib.crc32(packed, zlib.crc32(name, zlib.crc32(head))) != _CRC.unpack(crc)[0]:
                    raise corrupt("checksum mismatch", **where)
                try:
                    raw = decompressor.decompress(packed, max_output_size=raw_len)
                    if len(raw) != raw_len:
                        raise ValueError(f"{len(raw)} bytes unpacked, header says {raw_len}")
                    block = Block(index, position, kind, topic, partition, first_offset)
                    if kind == RECORDS:
                        block.rows = decode_rows(raw, count)
                    else:
                        block.totals = json.loads(raw)
                except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
                    raise corrupt(f"unreadable payload: {exc}", **where) from None
                position += _BLOCK.size + name_len + packed_len + _CRC.size
                self.valid_bytes, self.blocks = position, index
                self.records += count if kind == RECORDS else 0
                self.complete = kind == END
                yield block


def scan(path: Path) -> tuple[ArchiveReader, ArchiveCorrupt | None]:
    """Read the whole archive, keeping nothing: its counts and where it is corrupt, if it is."""
    reader = ArchiveReader(path)
    try:
        for _block in reader:
            pass
    except ArchiveCorrupt as exc:
        return reader, exc
    return reader, None
