"""Canonical forms of the values that duplicate detection compares and blocks on.

Two records of one person rarely hold identical strings: case, accents, punctuation,
``+tags`` in email addresses, the order of family and given name, and for Chinese names
characters on one record and pinyin on the other. Everything here maps such variants to
one form, so that blocking keys (exact by nature) still meet, and similarity scores measure
real differences rather than formatting. Pure functions: no I/O, deterministic, cached
where the same value recurs (names and syllables repeat across customers).

Decisions, and why:

* **Email**: the whole address is lower-cased (real mail servers treat the local part
  case-insensitively, whatever RFC 5321 allows); a ``+tag`` is dropped for every domain
  (sub-addressing is ubiquitous and a blocking key only proposes candidates, which scoring
  then judges); dots in the local part are dropped only for Gmail (``gmail.com`` and its
  alias ``googlemail.com``), the one large provider documented to ignore them. Elsewhere
  ``j.smith`` and ``jsmith`` can be different people.
* **Phone**: the domain already stores E.164, so only stray formatting is removed.
* **Names**: NFKC (full-width letters, ligatures), case-folding (ß → ss), accents
  stripped (é → e, and pinyin tone marks: Zhāng → zhang), punctuation inside names
  removed (O'Brien → obrien), hyphens and spaces kept as word breaks.
* **Phonetic code**: Metaphone from `jellyfish`. Double Metaphone would add an alternate
  code for some non-English spellings, but its Python packages are unmaintained or thin
  wrappers, while jellyfish is actively kept (Rust core, wheels everywhere). Chinese names,
  where phonetic codes of English spelling rules fail, are covered by pinyin instead.
* **Pinyin**: Chinese characters become tone-less pinyin via `pypinyin`; Latin names that
  read entirely as pinyin syllables ("Zhang Wei", "ZHANG Xiaoming", "Xiao-Ming Zhang") are
  segmented into syllables the same way, so both spellings give the same syllables.
  ``ü`` is written ``u`` (pypinyin's ``lv``, passports' ``lyu`` and plain ``lu`` meet).
  The syllables are sorted for the blocking key, which makes the key independent of name
  order (family-first in Chinese, given-first in most Western forms).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import jellyfish
from nicknames import NickNamer
from pypinyin import Style, lazy_pinyin, pinyin
from pypinyin.pinyin_dict import pinyin_dict

from ledger.projections.dedup.pinyin_syllables import SYLLABLES

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_WORD_BREAK = re.compile(r"[\s\-\u2010-\u2015_/,;:\u00b7\u30fb]+")  # incl. Unicode dashes
_DROPPED_IN_NAMES = re.compile(r"[^\w\s]|_|\d")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_NOT_LETTER = re.compile(r"[^a-z]")

# Two-character Chinese family names: a full name written in one field ("欧阳娜娜") is split
# after these, otherwise after the first character. Single-character names are the rule.
_COMPOUND_SURNAMES = (
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 夏侯 令狐 司徒 长孙 宇文 轩辕 端木 "
    "西门 南宫 独孤 呼延 万俟 闻人 澹台 公冶 宗政 濮阳 太叔 申屠 钟离 百里"
)
COMPOUND_SURNAMES = frozenset(_COMPOUND_SURNAMES.split())
MAX_READINGS = 4  # readings of a family name's first character worth comparing
MAX_PINYIN_SYLLABLES = 8  # longer "names" are addresses or free text, not worth a key


def strip_accents(text: str) -> str:
    """Drop combining marks after canonical decomposition (é → e, ǎ → a, ü → u)."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def fold(text: str | None) -> str:
    """NFKC, case-fold, strip accents and collapse whitespace: the comparable form of free
    text such as address lines and localities."""
    if not text:
        return ""
    if text.isascii():  # the common case, 5x faster than the Unicode path
        return " ".join(text.lower().split())
    folded = strip_accents(unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


@lru_cache(maxsize=65536)
def place(text: str | None) -> str:
    """Comparable form of an address part; Chinese characters become spaced pinyin, so
    "北京" and "Beijing" compare equal, like names do."""
    folded = fold(text)
    if not has_cjk(folded):
        return folded
    return " ".join(
        _pinyin_u("".join(lazy_pinyin(word, style=Style.NORMAL))) if has_cjk(word) else word
        for word in folded.split()
    )


@lru_cache(maxsize=65536)
def name_words(name: str | None) -> tuple[str, ...]:
    """The words of a name in canonical form: "Mary-Jane O'Brien" → ("mary", "jane",
    "obrien"). Chinese characters are kept as they are (see `romanise`)."""
    if not name:
        return ()
    text = _WORD_BREAK.sub(" ", fold(name))
    text = _DROPPED_IN_NAMES.sub("", text)
    return tuple(text.split())


@lru_cache(maxsize=65536)
def romanise(name: str | None) -> str:
    """A name part as one string without spaces: pinyin for Chinese characters
    ("张伟" → "zhangwei"), the canonical letters otherwise ("Mary-Jane" → "maryjane"). This
    is the form names are scored on, so hanzi and pinyin spellings compare as equals."""
    words = name_words(name)
    if not words:
        return ""
    text = "".join(words)
    if has_cjk(text):
        return _pinyin_u("".join(lazy_pinyin(text, style=Style.NORMAL)))
    return text  # other scripts (Cyrillic, Greek, ...) are compared as written


@lru_cache(maxsize=65536)
def family_readings(family: str | None) -> tuple[str, ...]:
    """Other romanisations of a Chinese family name than `romanise`'s: every reading of its
    first character. Family names often take a rare one (区 Ou not Qu, 单 Shan not Dan,
    仇 Qiu not Chou), and a passport or web form spells the one the person uses, so scoring
    must accept any of them, as blocking (`pinyin_keys`) does. Empty for non-Chinese names."""
    words = name_words(family)
    text = "".join(words)
    if not text or not has_cjk(text[0]):
        return ()
    usual = romanise(family)
    rest = _pinyin_u("".join(lazy_pinyin(text[1:], style=Style.NORMAL))) if text[1:] else ""
    readings = (
        _pinyin_u(reading) + rest
        for reading in pinyin(text[0], style=Style.NORMAL, heteronym=True)[0][:MAX_READINGS]
    )
    return tuple(r for r in dict.fromkeys(readings) if r and r != usual)


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    return NickNamer()


@lru_cache(maxsize=65536)
def name_forms(given: str) -> frozenset[str]:
    """Other forms of a romanised given name as people use them: its nicknames and the
    names it is a nickname of (William, Bill, Will, Billy), from the `nicknames` package's
    hand-curated English table. A nickname on one record and the full name on another is
    the same given name; two unrelated given names (a sibling's) are not."""
    if not given or not given.isascii():
        return frozenset()
    namer = _nicknamer()
    return frozenset(namer.nicknames_of(given) | namer.canonicals_of(given))


def split_full_name(given: str | None, family: str | None) -> tuple[str, str]:
    """Given and family name, with a whole name entered in one field split in two.

    A Chinese name in one field is split after its family name (first character, or a
    compound surname); a Latin one after its first word (given-first order). When the order
    is wrong, scoring still sees it: it compares both name orders.
    """
    given, family = (given or "").strip(), (family or "").strip()
    if given and family:
        return given, family
    whole = given or family
    compact = "".join(name_words(whole))
    if has_cjk(compact) and len(compact) >= 2 and compact.isalpha():
        cut = 2 if compact[:2] in COMPOUND_SURNAMES and len(compact) > 2 else 1
        return compact[cut:], compact[:cut]
    words = whole.split()
    if len(words) >= 2:
        return words[0], " ".join(words[1:])
    return given, family


@lru_cache(maxsize=65536)
def phonetic(word: str) -> str:
    """Metaphone code of one canonical name word ("" when it has no Latin letters)."""
    letters = _NOT_LETTER.sub("", word)
    return jellyfish.metaphone(letters) if letters else ""


def _pinyin_u(text: str) -> str:
    """ü has three Latin spellings (v in pypinyin, yu on passports since 2012, u); one."""
    return text.replace("v", "u").replace("lyu", "lu").replace("nyu", "nu")


def syllables_from_pypinyin() -> frozenset[str]:
    """The syllable inventory rebuilt from pypinyin's own character table (slow: 0.15 s);
    `SYLLABLES` is its stored result, and a test keeps the two in step."""
    syllables: set[str] = set()
    for readings in pinyin_dict.values():
        for reading in readings.split(","):
            plain = _pinyin_u(_NOT_LETTER.sub("", strip_accents(reading).casefold()))
            if plain:
                syllables.add(plain)
    # Interjection readings (hm, ng, m) would make many Western names "pinyin".
    return frozenset(s for s in syllables if any(vowel in s for vowel in "aeiou"))


@lru_cache(maxsize=65536)
def segment_pinyin(word: str) -> tuple[str, ...] | None:
    """Split a Latin word into pinyin syllables ("xiaoming" → ("xiao", "ming")), fewest
    syllables first, or None when it is not pinyin. Deterministic, so the same string
    always gives the same syllables on both records."""
    known = SYLLABLES
    n = len(word)
    if n == 0 or n > 6 * MAX_PINYIN_SYLLABLES:
        return None
    best: list[tuple[str, ...] | None] = [None] * (n + 1)
    best[0] = ()
    for end in range(1, n + 1):
        for start in range(max(0, end - 6), end):
            head = best[start]
            if head is not None and word[start:end] in known:
                candidate = (*head, word[start:end])
                current = best[end]
                if current is None or len(candidate) < len(current):
                    best[end] = candidate
        if end >= 6 and all(b is None for b in best[end - 5 : end + 1]):
            # No split reaches any of the last six places: none can reach further (a
            # syllable is at most six letters), so the word is not pinyin.
            return None
    return best[n]


def _hanzi_readings(text: str) -> list[tuple[str, ...]]:
    """Tone-less readings of a Chinese name: the reading in context, plus every reading of
    the first character, because family names often take a rare one (曾 zeng, 单 shan)."""
    usual = tuple(_pinyin_u(s) for s in lazy_pinyin(text, style=Style.NORMAL))
    readings = [usual]
    for alternative in pinyin(text[0], style=Style.NORMAL, heteronym=True)[0][:3]:
        variant = (_pinyin_u(alternative), *usual[1:])
        if variant not in readings:
            readings.append(variant)
    return readings


@lru_cache(maxsize=65536)  # a look-up prepares every candidate; names repeat a lot
def pinyin_keys(given: str | None, family: str | None) -> frozenset[str]:
    """Sorted-syllable forms of a full name when it is Chinese or reads as pinyin, else
    none. 张伟, "Zhang Wei", "ZHANG Wei" and "Wei Zhang" all give {"wei zhang"}."""
    words = [*name_words(given), *name_words(family)]
    if not words:
        return frozenset()
    per_word: list[list[tuple[str, ...]]] = []
    for word in words:
        if has_cjk(word):
            if not all(has_cjk(char) for char in word):
                return frozenset()  # mixed scripts inside one word: not a name we can read
            per_word.append(_hanzi_readings(word))
        else:
            syllables = segment_pinyin(_pinyin_u(word))
            if syllables is None:
                return frozenset()
            per_word.append([syllables])
    keys: set[str] = set()
    combined: list[tuple[str, ...]] = [()]
    for options in per_word:
        combined = [(*done, *option) for done in combined for option in options][:4]
    for syllables in combined:
        if len(syllables) <= MAX_PINYIN_SYLLABLES:
            keys.add(" ".join(sorted(syllables)))
    return frozenset(keys)


def canonical_email(email: str | None) -> str:
    """See the module docstring for the rules; "" when there is no usable address."""
    if not email or "@" not in email:
        return ""
    local, _, domain = unicodedata.normalize("NFKC", email).strip().casefold().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}" if local and domain else ""


def canonical_phone(phone: str | None) -> str:
    """E.164 digits with the leading +; the domain has validated the number already."""
    if not phone:
        return ""
    digits = "".join(char for char in phone if char.isdigit())
    return f"+{digits}" if digits else ""


def canonical_identifier(value: str | None) -> str:
    """External ids are compared without case, spaces or separators ("AB-12 34" = "ab1234"),
    since legacy systems format the same id differently."""
    if not value:
        return ""
    folded = fold(value)
    return folded.replace(" ", "") if folded.isalnum() else "".join(filter(str.isalnum, folded))


def canonical_postcode(value: str | None) -> str:
    """Postcodes without spaces and case ("SW1A 1AA" = "sw1a1aa")."""
    return canonical_identifier(value)


def canonical_birth_date(value: str | None) -> str:
    """The domain stores ISO dates; anything else (legacy junk) is treated as absent."""
    if not value or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return ""
    return value


def clear_caches() -> None:
    """Forget memoised names, syllables and places: frees their memory, and lets a
    benchmark time a cold run rather than one that reuses the previous run's work."""
    for cached in (
        name_words,
        romanise,
        family_readings,
        name_forms,
        place,
        phonetic,
        segment_pinyin,
        pinyin_keys,
    ):
        cached.cache_clear()
