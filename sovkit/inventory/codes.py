"""ISO 3166 jurisdiction codes, checked against pycountry's real lists (not a regex)."""

from __future__ import annotations

from functools import cache

import pycountry


@cache
def country_codes() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


@cache
def subdivision_codes() -> frozenset[str]:
    return frozenset(s.code for s in pycountry.subdivisions)


def is_jurisdiction(code: str) -> bool:
    """An ISO 3166-1 alpha-2 country or an ISO 3166-2 subdivision code."""
    return code in country_codes() or code in subdivision_codes()


def country_of(code: str) -> str:
    """The country part of a jurisdiction code (``KR-11`` -> ``KR``)."""
    return code.split("-", 1)[0]


_COMMON_MISTAKES = {
    "UK": "GB",  # the ISO code of the United Kingdom is GB
    "EL": "GR",  # the EU's code for Greece is not ISO 3166
}


def suggest_jurisdiction(code: str) -> str | None:
    """A likely intended code for a wrong one (``kr`` -> ``KR``, ``KOR`` -> ``KR``, ``UK`` -> ``GB``)."""
    upper = code.strip().upper()
    if upper != code and is_jurisdiction(upper):
        return upper
    if upper in _COMMON_MISTAKES:
        return _COMMON_MISTAKES[upper]
    if len(upper) == 3:
        country = pycountry.countries.get(alpha_3=upper)
        if country is not None:
            return str(country.alpha_2)
    return None
