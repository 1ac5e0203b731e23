"""Primary account numbers (card numbers) in clear: recognising them and masking them.

A PAN is 13 to 19 digits, optionally grouped with spaces or dashes, that pass the Luhn check.
The job's identifiers are tokens; a PAN found where a token belongs is refused by 10_validate,
and every dead letter is masked before it is written (first six and last four digits kept, as
PCI DSS allows them to be displayed).
"""

from __future__ import annotations

import re

_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_CANDIDATE_BYTES = re.compile(rb"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
# Cheap first passes, so that a long payload without card numbers costs little: a text with fewer
# than 13 ASCII digits has none, and only runs of digits, spaces and dashes can hold one.
_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
_RUN_BYTES = re.compile(rb"[0-9][0-9 -]{11,}[0-9]")
_NOT_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)
_SEPARATORS = str.maketrans("", "", " -")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def looks_like_pan(value: str) -> bool:
    """True when the whole value is a card number (13-19 digits, spaces or dashes allowed, Luhn)."""
    if len(value) < 13:
        return False
    digits = value.translate(_SEPARATORS)
    return 13 <= len(digits) <= 19 and digits.isascii() and digits.isdigit() and luhn_valid(digits)


def _mask_match(text: str) -> str:
    digits = text.translate(_SEPARATORS)
    if not luhn_valid(digits):
        return text
    keep_last = len(digits) - 4
    out, seen = [], 0
    for char in text:
        if char.isdigit():
            out.append(char if seen < 6 or seen >= keep_last else "*")
            seen += 1
        else:
            out.append(char)
    return "".join(out)


def _mask_run(run: str) -> str:
    return _CANDIDATE.sub(lambda m: _mask_match(m.group()), run)


def mask_pans(text: str) -> str:
    """`text` with every card number in it masked to its first six and last four digits."""
    if len(text) < 13 or len(text.encode("utf-8", "surrogatepass").translate(None, _NOT_DIGITS)) < 13:
        return text
    return _RUN.sub(lambda m: _mask_run(m.group()), text)


def mask_pans_bytes(data: bytes) -> bytes:
    """The same for raw bytes (which need not be UTF-8); digits are ASCII in any case."""
    if len(data) < 13 or len(data.translate(None, _NOT_DIGITS)) < 13:
        return data
    return _RUN_BYTES.sub(
        lambda m: _CANDIDATE_BYTES.sub(lambda n: _mask_match(n.group().decode("ascii")).encode("ascii"), m.group()),
        data,
    )
