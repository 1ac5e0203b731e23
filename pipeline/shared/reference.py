"""ISO reference lists: ISO-4217 currencies with their minor units, ISO-3166-1 alpha-2 countries.

The CSV files beside this module are the reference; the contract's `in` lists are checked against
them by the contract tests.
"""

from __future__ import annotations

import csv
import functools
import pathlib

_DIR = pathlib.Path(__file__).resolve().parent / "reference"


@functools.cache
def currency_minor_units() -> dict[str, int]:
    """ISO-4217 code -> number of decimal places, for currencies that have a minor unit."""
    with open(_DIR / "iso4217.csv", newline="", encoding="utf-8") as f:
        return {row["code"]: int(row["minor_units"]) for row in csv.DictReader(f) if row["minor_units"]}


@functools.cache
def countries() -> frozenset[str]:
    """ISO-3166-1 alpha-2 codes."""
    with open(_DIR / "iso3166.csv", newline="", encoding="utf-8") as f:
        return frozenset(row["alpha_2"] for row in csv.DictReader(f))


@functools.cache
def eur_per_unit() -> dict[str, float]:
    """Reference rate: euros per one major unit of each currency (a fixed table, for features)."""
    with open(_DIR / "fx_eur.csv", newline="", encoding="utf-8") as f:
        return {row["currency"]: float(row["eur_per_unit"]) for row in csv.DictReader(f)}


def to_major_units(minor_units: int, currency: str) -> float:
    return minor_units / (10 ** currency_minor_units()[currency])
