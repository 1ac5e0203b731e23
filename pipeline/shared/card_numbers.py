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
# A cheap first pass, all in C, so that a long payload without card numbers costs little: every
# byte becomes 0 (digit), - (space or dash) or . (anything else); with the separators taken out,
# a card number leaves 13 zeros in a row. Texts that pass are searched by digit runs only.
_CLASSES = bytes(48 if 48 <= c <= 57 else 45 if c in (32, 45) else 46 for c in range(256))
_THIRTEEN_DIGITS = b"0" * 13
_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")
_RUN_BYTES = re.compile(rb"[0-9][0-9 -]{11,}[0-9]")
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
    if not 13 <= len(value) <= 37:  # 19 digits and a separator between each pair at most
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


def _may_hold_pan(data: bytes) -> bool:
    return len(data) >= 13 and _THIRTEEN_DIGITS in data.translate(_CLASSES).replace(b"-", b"")


def mask_pans(text: str) -> str:
    """`text` with every card number in it masked to its first six and last four digits."""
    if not _may_hold_pan(text.encode("utf-8", "surrogatepass")):
        return text
    return _RUN.sub(lambda m: _mask_run(m.group()), text)


def mask_pans_bytes(data: bytes) -> bytes:
    """The same for raw bytes (which need not be UTF-8); digits are ASCII in any case."""
    if not _may_hold_pan(data):
        return data
    return _RUN_BYTES.sub(
        lambda m: _CANDIDATE_BYTES.sub(lambda n: _mask_match(n.group().decode("ascii")).encode("ascii"), m.group()),
        data,
    )
