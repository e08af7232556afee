"""A Chinese-name test set: the same people in hanzi, in pinyin, and with typos.

Each person (Faker zh_CN: family name, given name, birth date, city, mobile number) is
registered once in characters, then again in one or two other spellings, the way a
customer reappears through a foreign web form, a passport scan or a call-centre agent:

  pinyin          Wei / Zhang, given-first
  swapped caps    ZHANG in the given-name field, Wei in the family-name field
  one field       张伟 entirely in the family-name field
  compact         "Zhangwei" in one field
  tone marks      Wěi / Zhāng
  homophone       张玮 for 张伟: another character with the same sound (pinyin input methods)
  pinyin typo     Wie / Zhang

Variants come with a new email address and keep each of birth date, phone number and
city (in characters or pinyin) with probability 1/2, at least one of them: a name alone
cannot tell namesakes apart, and the blocking keys on birth date and phone find some
variants without any name key. Faker's name lists are short (about 280 family
and 130 given names), so namesakes who are different people are frequent, as they are in
reality (张伟 is one of China's most common names): precision measures that.

The figures compare the engine with and without its pinyin keys: without them, hanzi stay
hanzi in every blocking key, which is what an engine without Chinese-name support does.

    python -m bench.chinese_names [--people 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ledger.projections.dedup import KEY_KINDS, duplicates_among
from ledger.projections.dedup.keys import PINYIN, key_values
from ledger.projections.dedup.record import prepare

VARIANTS = (
    "pinyin",
    "swapped caps",
    "one field",
    "compact",
    "tone marks",
    "homophone",
    "pinyin typo",
)


@dataclass(frozen=True)
class ChineseSet:
    profiles: dict[str, dict[str, Any]]
    truth: frozenset[tuple[str, str]]
    variant_of: dict[str, str]  # record id -> variant kind ("original" for the first)


def _syllables(text: str, style: Any = None) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return list(lazy_pinyin(text, style=Style.NORMAL if style is None else style))


def _title(syllables: list[str]) -> str:
    return "".join(syllables).capitalize()


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 3:
        return word + rng.choice("aeiou")
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _homophones(given_names: list[str]) -> dict[str, list[str]]:
    """Characters of Faker's given names grouped by their tone-less reading."""
    from pypinyin import Style

    by_sound: dict[str, set[str]] = defaultdict(set)
    for name in given_names:
        for char in name:
            by_sound[_syllables(char, Style.NORMAL)[0]].add(char)
    return {sound: sorted(chars) for sound, chars in by_sound.items() if len(chars) > 1}


def spell(
    kind: str, family: str, given: str, rng: random.Random, homophones: dict[str, list[str]]
) -> dict[str, Any]:
    from pypinyin import Style

    family_pinyin = _title(_syllables(family, Style.NORMAL))
    given_pinyin = _title(_syllables(given, Style.NORMAL))
    if kind == "pinyin":
        return {"given_name": given_pinyin, "family_name": family_pinyin}
    if kind == "swapped caps":
        return {"given_name": family_pinyin.upper(), "family_name": given_pinyin}
    if kind == "one field":
        return {"family_name": family + given}
    if kind == "compact":
        return {"family_name": family_pinyin + given_pinyin.lower()}
    if kind == "tone marks":
        return {
            "given_name": _title(_syllables(given, Style.TONE)),
            "family_name": _title(_syllables(family, Style.TONE)),
        }
    if kind == "homophone":
        chars = list(given)
        for i, char in enumerate(chars):
            options = [
                c for c in homophones.get(_syllables(char, Style.NORMAL)[0], []) if c != char
            ]
            if options:
                chars[i] = rng.choice(options)
                break
        return {"given_name": "".join(chars), "family_name": family}
    if kind == "pinyin typo":
        return {"given_name": _typo(given_pinyin, rng), "family_name": family_pinyin}
    raise ValueError(kind)


def build(people: int, *, seed: int = 8) -> ChineseSet:
    from faker import Faker

    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    homophones = _homophones([fake.first_name() for _ in range(3000)])
    profiles: dict[str, dict[str, Any]] = {}
    variant_of: dict[str, str] = {}
    truth: set[tuple[str, str]] = set()
    for number in range(people):
        family, given = fake.last_name(), fake.first_name()
        born = fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat()
        city = fake.city_name()
        original = f"zh{number:05d}-0"
        profiles[original] = {
            "given_name": given,
            "family_name": family,
            "birth_date": born,
            "phones": [f"+861{rng.choice('3589')}{rng.randint(100_000_000, 999_999_999)}"],
            "emails": [f"user{number}@example.cn"],
            "addresses": [{"locality": city, "country": "CN"}],
        }
        variant_of[original] = "original"
        ids = [original]
        for copy, kind in enumerate(rng.sample(VARIANTS, rng.choice((1, 2))), start=1):
            record_id = f"zh{number:05d}-{copy}"
            profile = spell(kind, family, given, rng, homophones)
            profile["emails"] = [f"u{number}.{copy}@example.com"]
            kept = [field for field in ("birth_date", "phones", "city") if rng.random() < 0.5]
            for field in kept or [rng.choice(("birth_date", "phones", "city"))]:
                if field == "city":
                    place = city if rng.random() < 0.5 else _title(_syllables(city))
                    profile["addresses"] = [{"locality": place, "country": "CN"}]
                else:
                    profile[field] = profiles[original][field]
            profiles[record_id], variant_of[record_id] = profile, kind
            ids.append(record_id)
        truth.update((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    return ChineseSet(profiles, frozenset(truth), variant_of)


@dataclass(frozen=True)
class Outcome:
    candidate_recall: float
    precision: float
    recall: float
    f1: float
    seconds: float
    recall_by_variant: dict[str, float]
    method: str


def evaluate(data: ChineseSet, *, pinyin: bool) -> Outcome:
    kinds = KEY_KINDS if pinyin else tuple(k for k in KEY_KINDS if k != PINYIN)
    start = time.perf_counter()
    report, index = duplicates_among(data.profiles, os.urandom(32), kinds=kinds)
    seconds = time.perf_counter() - start
    found = {(p.first, p.second) for p in report.pairs}
    candidates = index.candidate_pairs()
    hits = found & data.truth
    precision = len(hits) / len(found) if found else 1.0
    recall = len(hits) / len(data.truth)
    by_variant: dict[str, list[bool]] = defaultdict(list)
    for a, b in data.truth:
        if a.endswith("-0"):  # original vs variant: the variant's kind
            by_variant[data.variant_of[b]].append((a, b) in found)
    return Outcome(
        candidate_recall=len(candidates & data.truth) / len(data.truth),
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / (precision + recall) if hits else 0.0,
        seconds=seconds,
        recall_by_variant={k: sum(v) / len(v) for k, v in sorted(by_variant.items())},
        method=report.model.method,
    )


def example_keys() -> list[tuple[str, str]]:
    """The pinyin blocking keys (before hashing) of 张伟 in every spelling."""
    spellings = [
        ("张伟", {"given_name": "伟", "family_name": "张"}),
        ("Zhang Wei", {"given_name": "Zhang", "family_name": "Wei"}),
        ("ZHANG Wei", {"given_name": "Wei", "family_name": "ZHANG"}),
        ("Wei Zhang", {"given_name": "Wei", "family_name": "Zhang"}),
        ("Zhāng Wěi", {"family_name": "Zhāng Wěi"}),
        ("Zhangwei", {"family_name": "Zhangwei"}),
        ("张玮 (homophone)", {"given_name": "玮", "family_name": "张"}),
        ("曾伟 (曾 = zeng/ceng)", {"given_name": "伟", "family_name": "曾"}),
        ("李娜 (someone else)", {"given_name": "娜", "family_name": "李"}),
    ]
    return [
        (
            label,
            ", ".join(v for kind, v in key_values(prepare(profile)) if kind == PINYIN),
        )
        for label, profile in spellings
    ]


def report(people: int) -> str:
    data = build(people)
    originals = sum(1 for kind in data.variant_of.values() if kind == "original")
    lines = [
        f"Chinese-name set: {originals} people, {len(data.profiles)} records, "
        f"{len(data.truth)} true duplicate pairs (Faker zh_CN, seed 8)",
        "",
        "| pinyin keys | candidate recall | precision | recall | F1 | time | model |",
        "|---|---|---|---|---|---|---|",
    ]
    outcomes = {flag: evaluate(data, pinyin=flag) for flag in (True, False)}
    for flag, o in outcomes.items():
        lines.append(
            f"| {'with' if flag else 'without'} | {o.candidate_recall:.4f} | {o.precision:.4f} "
            f"| {o.recall:.4f} | {o.f1:.4f} | {o.seconds:.2f} s | {o.method} |"
        )
    lines += ["", "Recall of original (hanzi) vs variant, by variant:", ""]
    lines += ["| variant | with pinyin keys | without |", "|---|---|---|"]
    for kind in outcomes[True].recall_by_variant:
        lines.append(
            f"| {kind} | {outcomes[True].recall_by_variant[kind]:.3f} "
            f"| {outcomes[False].recall_by_variant.get(kind, 0.0):.3f} |"
        )
    lines += ["", "Pinyin blocking keys before hashing:", ""]
    lines += ["| spelling | pinyin keys |", "|---|---|"]
    lines += [f"| {label} | {keys or '(none)'} |" for label, keys in example_keys()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=2000)
    print(report(parser.parse_args().people))


if __name__ == "__main__":
    main()
