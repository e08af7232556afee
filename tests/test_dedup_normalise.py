"""Canonical forms: the variants one person's data comes in must meet in one form."""

from __future__ import annotations

import pytest

from ledger.projections.dedup.normalise import (
    SYLLABLES,
    canonical_birth_date,
    canonical_email,
    canonical_identifier,
    canonical_phone,
    fold,
    name_words,
    phonetic,
    pinyin_keys,
    place,
    romanise,
    segment_pinyin,
    split_full_name,
    syllables_from_pypinyin,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Ada.Lovelace@Example.ORG", "ada.lovelace@example.org"),  # dots kept off Gmail
        ("ada+newsletter@example.org", "ada@example.org"),  # +tags dropped everywhere
        ("A.Da.Lovelace+x@gmail.com", "adalovelace@gmail.com"),  # Gmail ignores dots
        ("ada.lovelace@googlemail.com", "adalovelace@gmail.com"),  # one Gmail domain
        ("not-an-email", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_canonical_email(raw: str | None, canonical: str) -> None:
    assert canonical_email(raw) == canonical


def test_phone_identifier_postcode_and_date_forms() -> None:
    assert canonical_phone("+44 20 7946-0018") == "+442079460018"
    assert canonical_phone("") == ""
    assert canonical_identifier(" AB-12 34 ") == "ab1234"
    assert canonical_birth_date("1985-12-10") == "1985-12-10"
    assert canonical_birth_date("19851210") == ""  # legacy junk counts as absent


def test_names_fold_case_accents_width_and_punctuation() -> None:
    assert name_words("Mary-Jane  O'Brien") == ("mary", "jane", "obrien")
    assert name_words("\uff2a\uff2f\uff28\uff2e") == ("john",)  # full-width JOHN (NFKC)
    assert name_words("José Müller") == ("jose", "muller")
    assert fold("Straße") == "strasse"  # case-folding, not lower()
    assert romanise("Mary-Jane") == "maryjane"
    assert romanise("Zhāng") == "zhang"  # pinyin tone marks are accents
    assert romanise("张伟") == "zhangwei"


def test_phonetic_code_ignores_spelling_variants() -> None:
    assert phonetic("mitchell") == phonetic("michell")
    assert phonetic("smith") == phonetic("smyth")
    assert phonetic("123") == ""


def test_pinyin_segmentation() -> None:
    assert segment_pinyin("xiaoming") == ("xiao", "ming")
    assert segment_pinyin("zhangwei") == ("zhang", "wei")
    assert segment_pinyin("mitchell") is None


def test_syllable_table_matches_pypinyin() -> None:
    """The stored table must follow the installed pypinyin (a new version may add some)."""
    assert syllables_from_pypinyin() == SYLLABLES


@pytest.mark.parametrize(
    ("given", "family"),
    [
        ("伟", "张"),
        (None, "张伟"),  # the whole name in one field
        ("Wei", "Zhang"),
        ("Wei", "ZHANG"),
        ("Zhang", "Wei"),  # family name entered as the given name
        ("Zhāng Wěi", None),  # tone marks, one field
        (None, "Zhangwei"),  # no space at all
        ("Wei", "Zhang "),
    ],
)
def test_zhang_wei_in_every_spelling_gives_one_pinyin_key(
    given: str | None, family: str | None
) -> None:
    assert "wei zhang" in pinyin_keys(given, family)


def test_pinyin_keys_cover_rare_family_name_readings() -> None:
    # 曾 reads "ceng" in most words but "zeng" as a family name: both keys are kept.
    keys = pinyin_keys(None, "曾小明")
    assert {"ming xiao zeng", "ceng ming xiao"} <= keys


def test_other_names_get_other_or_no_pinyin_keys() -> None:
    assert "wei zhang" not in pinyin_keys("娜", "李")
    assert "wei zhang" not in pinyin_keys("Wei", "Wang")
    assert pinyin_keys("Mitchell", "Green") == frozenset()  # not pinyin at all


def test_full_names_in_one_field_are_split() -> None:
    assert split_full_name(None, "张伟") == ("伟", "张")
    assert split_full_name(None, "欧阳娜娜") == ("娜娜", "欧阳")  # compound family name
    assert split_full_name("Ada Lovelace", None) == ("Ada", "Lovelace")
    assert split_full_name("Ada", "Lovelace") == ("Ada", "Lovelace")
    assert split_full_name(None, "Lovelace") == ("", "Lovelace")


def test_chinese_place_names_compare_in_pinyin() -> None:
    assert place("北京") == place("Beijing") == "beijing"
    assert place("上海市 浦东新区") == "shanghaishi pudongxinqu"
    assert place("Kent  St") == "kent st"
