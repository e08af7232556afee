"""The small corruptions that real data entry makes: typed names, dates and numbers.

Every function takes the `random.Random` to draw from, so a set is the same on every run.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

_KEYBOARD = {  # QWERTZ neighbours, enough for plausible substitutions
    "a": "sqy",
    "b": "vgn",
    "c": "xdv",
    "d": "sfe",
    "e": "wrd",
    "f": "dgr",
    "g": "fht",
    "h": "gjz",
    "i": "uok",
    "j": "hku",
    "k": "jli",
    "l": "kop",
    "m": "nj",
    "n": "bmh",
    "o": "ipl",
    "p": "ol",
    "r": "etf",
    "s": "adw",
    "t": "rzg",
    "u": "ziz",
    "v": "cbf",
    "w": "qes",
    "x": "ycs",
    "y": "xa",
    "z": "tuh",
}
_UMLAUTS = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"}
_PLAIN = {"ä": "a", "ö": "o", "ü": "u", "ß": "s", "Ä": "A", "Ö": "O", "Ü": "U"}


def typo(word: str, rng: random.Random) -> str:
    """One edit inside the word (never its first letter): a transposition, a deletion, a
    doubled letter or a neighbouring key."""
    if len(word) < 3:
        return word + rng.choice("aeinr")
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "key"))
    if kind == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    lower = word[i].lower()
    if lower in _KEYBOARD:
        return word[:i] + rng.choice(_KEYBOARD[lower]) + word[i + 1 :]
    return word[:i] + word[i + 1 :]


def has_umlaut(word: str) -> bool:
    return any(c in _UMLAUTS for c in word)


def transliterate(word: str, rng: random.Random) -> str:
    """Umlauts as an ASCII-only system writes them: ü -> ue (mostly) or u."""
    table = _UMLAUTS if rng.random() < 0.7 else _PLAIN
    return "".join(table.get(c, c) for c in word)


def ascii_fold(word: str) -> str:
    return "".join(_UMLAUTS.get(c, c) for c in word)


def random_date(rng: random.Random, first_year: int = 1935, last_year: int = 2006) -> date:
    start = date(first_year, 1, 1)
    return start + timedelta(days=rng.randrange((date(last_year, 12, 31) - start).days))


def _valid(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return "1900-01-01" <= text <= "2010-12-31"


_DATE_DIGITS = (2, 3, 5, 6, 8, 9)  # positions of YYYY-MM-DD one mistypes (not the century)


def date_digits_off(born: date, digits: int, rng: random.Random) -> str:
    """The date with `digits` digits mistyped, still a valid date (the hard case: nothing
    marks it as wrong)."""
    text = born.isoformat()
    for _ in range(200):
        chars = list(text)
        for position in rng.sample(_DATE_DIGITS, digits):
            chars[position] = rng.choice([d for d in "0123456789" if d != text[position]])
        candidate = "".join(chars)
        if _valid(candidate):
            return candidate
    return (born + timedelta(days=1)).isoformat()


def day_month_swapped(born: date) -> str | None:
    """YYYY-DD-MM read as YYYY-MM-DD: only a valid date when the day is 12 or less."""
    if born.day > 12 or born.day == born.month:
        return None
    return date(born.year, born.day, born.month).isoformat()


def impossible_date(born: date, rng: random.Random) -> str:
    """A date no calendar has, as legacy systems hold them: 30 February, 31 April, month 13
    (day and month typed the wrong way round), day 00."""
    choice = rng.randrange(4)
    if choice == 0:
        return f"{born.year:04d}-02-{rng.choice((30, 31))}"
    if choice == 1:
        return f"{born.year:04d}-{rng.choice((4, 6, 9, 11)):02d}-31"
    if choice == 2:
        return f"{born.year:04d}-{max(born.day, 13):02d}-{born.month:02d}"
    return f"{born.year:04d}-{born.month:02d}-00"
