"""Which text encoding a CSV is in, decided strictly: bytes that no supported encoding decodes cleanly are refused.

Detection order: a UTF-32 byte-order mark (refused by name), UTF-16 (a byte-order mark, or the NUL byte of every
other byte that ASCII text has in UTF-16 without one), the UTF-8 byte-order mark, UTF-8, then cp932 (Windows
Japanese). cp932 is checked more strictly than Python's codec: the codec maps bytes that cp932 text never holds
(``0x80``, ``0xa0``, ``0xfd``-``0xff``) and the user-defined area to control or private-use characters without
complaint, so invalid UTF-8 would otherwise slip in as odd categories. NUL is refused in every encoding: it is
no character of a CSV, and a NUL in decoded text means binary data or a wrong encoding.

Decoding is incremental (:func:`decoded_blocks`), so a large file can be checked in bounded memory.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from objectives.errors import DataError

SUPPORTED = ("utf-8", "utf-8-sig", "utf-16", "cp932")
# where a user sets it: messages are raised below the command line and the study file, so they name both
_HOW = "set the file's encoding (data.encoding in a study or exported file, --encoding on the command line)"
BLOCK = 1 << 20
# C1 controls (cp932's 0x80), and the private-use area (cp932's user-defined characters and its 0xa0, 0xfd-0xff)
_CP932_ODD = re.compile("[\x80-\x9f\ue000-\uf8ff]")
_NUL = re.compile("\x00")


def _canonical(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}; use one of {', '.join(SUPPORTED)}") from None


def sniff(head: bytes) -> str | None:
    """An encoding told by the first bytes alone (a byte-order mark, UTF-16's NUL pattern), else None."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise DataError("the file is UTF-32 (byte-order mark): save it as UTF-8")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    sample = head[:4096]
    half = len(sample) // 2
    if half >= 2:
        even, odd = sample[0 : 2 * half : 2].count(0), sample[1 : 2 * half : 2].count(0)
        # ASCII-range text in UTF-16 without a byte-order mark: the high byte of (nearly) every character is NUL
        if odd >= 0.4 * half and even <= 0.05 * half:
            return "utf-16-le"
        if even >= 0.4 * half and odd <= 0.05 * half:
            return "utf-16-be"
    return None


class _Undecodable(DataError):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def decoded_blocks(blocks: Iterable[bytes], encoding: str, name: str) -> Iterator[str]:
    """The text of ``blocks`` in ``encoding``; :class:`DataError` at the first byte it does not decode cleanly."""
    canonical = _canonical(encoding)
    decoder = codecs.getincrementaldecoder(canonical)(errors="strict")
    odd = _CP932_ODD if canonical == "cp932" else None
    offset, line = 0, 1
    blocks = iter(blocks)
    while True:
        block = next(blocks, None)
        final = block is None
        data = b"" if block is None else block
        try:
            text = decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            # exc.start counts from the bytes this call was given: the decoder's carried-over bytes first
            pending = len(exc.object) - len(data)
            at = line + exc.object[: exc.start].count(b"\n")
            reason = (
                f"byte {offset - pending + exc.start} (0x{exc.object[exc.start]:02x}) on line {at} cannot be decoded"
            )
            raise _Undecodable(
                f"{name} is not valid {encoding}: {reason}; {_HOW}: {', '.join(SUPPORTED)}",
                reason,
            ) from None
        for pattern, what in (
            (_NUL, "a NUL byte (binary data, or UTF-16 read as another encoding)"),
            (odd, "a byte cp932 text does not hold"),
        ):
            found = pattern.search(text) if pattern is not None else None
            if found:
                reason = f"line {line + text.count(chr(10), 0, found.start())} has {what} ({found.group()!r})"
                raise _Undecodable(
                    f"{name} is not valid {encoding}: {reason}; save the file as UTF-8, or {_HOW}",
                    reason,
                )
        yield text
        if final:
            return
        offset += len(data)
        line += text.count("\n")


def _detect(
    blocks: Callable[[], Iterable[bytes]], head: bytes, encoding: str | None, name: str, keep: bool
) -> tuple[str, str]:
    """(encoding, text if ``keep`` else ""): the given encoding, or the first candidate that decodes cleanly."""
    sniffed = sniff(head) if encoding is None else None
    candidates = [encoding] if encoding is not None else [sniffed] if sniffed else ["utf-8", "cp932"]
    reasons = []
    for candidate in candidates:
        try:
            parts = [t for t in decoded_blocks(blocks(), candidate, name) if keep]
        except _Undecodable as exc:
            if encoding is not None:
                raise
            reasons.append(f"not {candidate}: {exc.reason}")
            continue
        return candidate, "".join(parts)
    raise DataError(f"cannot detect the encoding of {name} ({'; '.join(reasons)}); {_HOW}: {', '.join(SUPPORTED)}")


def decode(raw: bytes, encoding: str | None, name: str) -> tuple[str, str]:
    """(text, encoding used) of a whole file's bytes; ``encoding`` None means detect."""
    used, text = _detect(lambda: [raw], raw[:8192], encoding, name, keep=True)
    return text, used


def detect_file(path: Path, encoding: str | None) -> str:
    """The encoding of the file at ``path``, checked over the whole file in blocks (bounded memory)."""

    def blocks() -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(BLOCK), b"")

    with open(path, "rb") as f:
        head = f.read(8192)
    return _detect(blocks, head, encoding, str(path), keep=False)[0]
