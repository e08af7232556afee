"""Chinese customers: scripts, pinyin orders, homophones, phone and address formats.

    build(people, seed) -> LabelledSet      (bench.sets.LabelledSet)

Family names at their real shares (王, 李, 张 about 7% each; `bench.sets.frequencies`), plus
surnames read otherwise than their character (单 Shan, 区 Ou, 缪 Miao, 解 Xie, 仇 Qiu, 查 Zha,
覃 Qin, 朴 Piao, 盖 Ge: 0.25% each, so every set has a few); given names from the commonest
(伟, 芳, 娜, 敏 ...: 10% of people) or two-character compositions. So 张伟, 王芳 and 李娜 are
many different people, as in life. Each person has a birth date, a mobile number, an
address (street and number in a district of a city) and maybe an email address.

About 45% of people have a second record (10% a third) as another system or a call-centre
agent typed it. Its *variation* (the pair's label) is the name's form:

  same_hanzi        the name as before (the rest varies as below)
  pinyin            Wei / Zhang in the given / family fields
  pinyin_swapped    ZHANG in the given-name field, Wei in the family-name field
  one_field         张伟 entirely in the family-name field
  compact           "Zhangwei" (or "Zhang Wei") in one field
  tone_marks        Wěi / Zhāng
  homophone         张玮 for 张伟: another character with the same sound
  pinyin_typo       Wie / Zhang
  surname_reading   a surname read otherwise (区一倩 as "Yiqian OU", 单 as Shan)

and, whatever the name's form: the phone number in another format ("138-0013-8000",
"+86 138 0013 8000", "13800138000", "0086 13800138000") or missing, the address in
another form (without 市, street only, or in pinyin: "88 Jianguo Lu", "Beijing"), the
birth date missing on one side (30%), another email.

Hard negatives: ``namesake_same_city`` (same name, same city, another birth date),
``namesake_no_dob`` (same name and city, one of the two without birth date),
``household_address`` (same address: spouse or child, another given name),
``household_phone`` (same address and the same phone number: a family's one number).
Every other pair of different people with the same hanzi name is labelled ``namesake``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

from bench.sets import Collector, LabelledSet, frequencies, typos

COLUMNS = {
    "given_name": "given_name",
    "family_name": "family_name",
    "birth_date": "birth_date",
    "mobile": "phones",
    "email": "emails",
    "address": "address_line1",
    "district": "address_line2",
    "city": "locality",
}
COUNTRY = "CN"
NAME_VARIATIONS = (
    "same_hanzi",
    "pinyin",
    "pinyin_swapped",
    "one_field",
    "compact",
    "tone_marks",
    "homophone",
    "pinyin_typo",
)
# (city, its pinyin, districts)
CITIES = (
    ("北京市", "Beijing", ("朝阳区", "海淀区", "东城区", "西城区", "丰台区")),
    ("上海市", "Shanghai", ("浦东新区", "徐汇区", "静安区", "黄浦区")),
    ("广州市", "Guangzhou", ("天河区", "越秀区", "海珠区")),
    ("深圳市", "Shenzhen", ("南山区", "福田区", "罗湖区")),
    ("成都市", "Chengdu", ("武侯区", "锦江区", "青羊区")),
    ("杭州市", "Hangzhou", ("西湖区", "上城区", "拱墅区")),
    ("武汉市", "Wuhan", ("洪山区", "武昌区", "江汉区")),
    ("南京市", "Nanjing", ("鼓楼区", "玄武区", "秦淮区")),
    ("西安市", "Xi'an", ("雁塔区", "碑林区")),
    ("重庆市", "Chongqing", ("渝中区", "江北区", "南岸区")),
    ("天津市", "Tianjin", ("和平区", "河西区")),
    ("苏州市", "Suzhou", ("姑苏区", "吴中区")),
    ("长沙市", "Changsha", ("岳麓区", "芙蓉区")),
    ("郑州市", "Zhengzhou", ("金水区", "二七区")),
    ("青岛市", "Qingdao", ("市南区", "崂山区")),
)
STREETS = (
    ("建国路", "Jianguo Lu"),
    ("人民路", "Renmin Lu"),
    ("解放路", "Jiefang Lu"),
    ("中山路", "Zhongshan Lu"),
    ("长安街", "Chang'an Jie"),
    ("南京路", "Nanjing Lu"),
    ("和平路", "Heping Lu"),
    ("友谊路", "Youyi Lu"),
    ("科技路", "Keji Lu"),
    ("学院路", "Xueyuan Lu"),
    ("滨江大道", "Binjiang Dadao"),
    ("光明街", "Guangming Jie"),
    ("新华路", "Xinhua Lu"),
    ("幸福路", "Xingfu Lu"),
    ("朝阳北路", "Chaoyang Beilu"),
    ("东风路", "Dongfeng Lu"),
)
_DOMAINS = ("qq.com", "163.com", "126.com", "sina.com", "gmail.com")


@dataclass(frozen=True)
class Person:
    family: str
    given: str
    born: date
    mobile: str  # 11 digits
    email: str
    city: int  # index into CITIES
    district: str
    street: int  # index into STREETS
    number: int
    flat: str  # "3栋2单元501室" or ""


def _syllables(text: str, tones: bool = False) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return list(lazy_pinyin(text, style=Style.TONE if tones else Style.NORMAL))


def family_pinyin(family: str, tones: bool = False) -> str:
    """The surname's reading as a surname (区 is Ou, not qu), title-cased."""
    if not tones and family in frequencies.SURNAME_READINGS:
        return frequencies.SURNAME_READINGS[family].capitalize()
    return "".join(_syllables(family, tones)).capitalize()


def given_pinyin(given: str, tones: bool = False) -> str:
    return "".join(_syllables(given, tones)).capitalize()


def _homophones() -> dict[str, list[str]]:
    by_sound: dict[str, set[str]] = defaultdict(set)
    for char in frequencies.CHINESE_NAME_CHARACTERS + "".join(frequencies.CHINESE_GIVEN_COMMON):
        by_sound[_syllables(char)[0]].add(char)
    return {sound: sorted(chars) for sound, chars in by_sound.items() if len(chars) > 1}


def _homophone(given: str, homophones: dict[str, list[str]], rng: random.Random) -> str | None:
    chars = list(given)
    order = list(range(len(chars)))
    rng.shuffle(order)
    for i in order:
        options = [c for c in homophones.get(_syllables(chars[i])[0], []) if c != chars[i]]
        if options:
            chars[i] = rng.choice(options)
            return "".join(chars)
    return None


def name_form(
    kind: str, p: Person, rng: random.Random, homophones: dict[str, list[str]]
) -> tuple[dict[str, str], str]:
    """(the given_name / family_name columns, the variation label) for one form."""
    fam, giv = family_pinyin(p.family), given_pinyin(p.given)
    if kind == "pinyin":
        label = "surname_reading" if p.family in frequencies.SURNAME_READINGS else kind
        return {"given_name": giv, "family_name": fam}, label
    if kind == "pinyin_swapped":
        label = "surname_reading" if p.family in frequencies.SURNAME_READINGS else kind
        return {"given_name": fam.upper(), "family_name": giv}, label
    if kind == "one_field":
        return {"family_name": p.family + p.given}, kind
    if kind == "compact":
        text = fam + giv.lower() if rng.random() < 0.5 else f"{fam} {giv}"
        return {"family_name": text}, kind
    if kind == "tone_marks":
        return {
            "given_name": given_pinyin(p.given, tones=True),
            "family_name": family_pinyin(p.family, tones=True),
        }, kind
    if kind == "homophone":
        other = _homophone(p.given, homophones, rng)
        if other is not None:
            return {"given_name": other, "family_name": p.family}, kind
    if kind == "pinyin_typo":
        return {"given_name": typos.typo(giv, rng), "family_name": fam}, kind
    return {"given_name": p.given, "family_name": p.family}, "same_hanzi"


def phone_form(mobile: str, rng: random.Random) -> str:
    a, b, c = mobile[:3], mobile[3:7], mobile[7:]
    return rng.choice(
        (
            mobile,
            f"{a}-{b}-{c}",
            f"{a} {b} {c}",
            f"+86 {a} {b} {c}",
            f"+86{mobile}",
            f"0086 {mobile}",
            f"(+86) {a}-{b}-{c}",
        )
    )


def address_form(p: Person, form: str) -> dict[str, str]:
    city, city_pinyin, _ = CITIES[p.city]
    street, street_pinyin = STREETS[p.street]
    if form == "full":
        return {"address": f"{street}{p.number}号{p.flat}", "district": p.district, "city": city}
    if form == "short":
        return {"address": f"{street}{p.number}号", "city": city.removesuffix("市")}
    if form == "joined":
        return {"address": f"{city}{p.district}{street}{p.number}号{p.flat}", "city": city}
    return {"address": f"{p.number} {street_pinyin}", "city": city_pinyin}


def _person(
    surnames: frequencies.Weighted, given: frequencies.Weighted, rng: random.Random, n: int
) -> Person:
    city = rng.randrange(len(CITIES))
    flat = (
        f"{rng.randint(1, 20)}栋{rng.randint(1, 4)}单元{rng.randint(1, 30)}0{rng.randint(1, 4)}室"
        if rng.random() < 0.6
        else ""
    )
    return Person(
        family=surnames.draw(rng),
        given=given.draw(rng),
        born=typos.random_date(rng, 1940, 2006),
        mobile=f"1{rng.choice('3456789')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}",
        email=f"{rng.randint(10_000, 9_999_999_999)}@{rng.choice(_DOMAINS)}"
        if rng.random() < 0.6
        else "",
        city=city,
        district=rng.choice(CITIES[city][2]),
        street=rng.randrange(len(STREETS)),
        number=rng.randint(1, 300),
        flat=flat,
    )


def _row(
    p: Person, name: dict[str, str], *, phone: str, address: str, birth_date: bool
) -> dict[str, str]:
    return {
        **name,
        "birth_date": p.born.isoformat() if birth_date else "",
        "mobile": phone,
        "email": p.email,
        **address_form(p, address),
    }


def _original(p: Person, rng: random.Random) -> dict[str, str]:
    return _row(
        p,
        {"given_name": p.given, "family_name": p.family},
        phone=p.mobile if rng.random() < 0.7 else phone_form(p.mobile, rng),
        address="full" if rng.random() < 0.8 else "joined",
        birth_date=rng.random() < 0.9,
    )


def build(people: int, seed: int = 1) -> LabelledSet:
    """`people` persons, one to three records each (see the module docstring)."""
    rng = random.Random(seed)
    surnames, given = frequencies.chinese_surnames(), frequencies.chinese_given(seed)
    homophones = _homophones()
    out = Collector()
    by_name: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for n in range(people):
        p = _person(surnames, given, rng, n)
        roll = rng.random()
        copies = 2 if roll < 0.10 else 1 if roll < 0.45 else 0
        original = out.add(f"zh{n:06d}-0", _original(p, rng))
        records = [(original, "original")]
        for copy in range(1, copies + 1):
            kind = rng.choice(NAME_VARIATIONS)
            if p.family in frequencies.SURNAME_READINGS and rng.random() < 0.7:
                kind = rng.choice(("pinyin", "pinyin_swapped"))
            name, label = name_form(kind, p, rng, homophones)
            again = replace(p, email=f"{rng.randint(10_000, 9_999_999)}@{rng.choice(_DOMAINS)}")
            if rng.random() < 0.5:
                again = replace(again, email="")
            row = _row(
                again,
                name,
                phone=phone_form(p.mobile, rng) if rng.random() < 0.75 else "",
                address=rng.choice(("full", "short", "joined", "pinyin")),
                birth_date=rng.random() < 0.7,
            )
            records.append((out.add(f"zh{n:06d}-{copy}", row), label))
        out.person(records)
        for rec_id, _ in records:
            by_name[p.family + p.given].append((rec_id, n))
        other = _negative(out, p, original, surnames, given, rng)
        if other is not None:
            by_name[other[1].family + other[1].given].append((other[0], -n - 1))
    for members in by_name.values():
        for i, (a, person_a) in enumerate(members):
            for b, person_b in members[i + 1 : i + 30]:
                if person_a != person_b and (a, b) not in out.hard_negatives:
                    out.negative(a, b, "namesake")
    return out.done("chinese", COLUMNS, COUNTRY)


def _negative(
    out: Collector,
    p: Person,
    original: str,
    surnames: frequencies.Weighted,
    given: frequencies.Weighted,
    rng: random.Random,
) -> tuple[str, Person] | None:
    roll = rng.random()
    fresh = _person(surnames, given, rng, -1)
    birth_date = True
    if roll < 0.03:
        kind = "namesake_same_city"
        other = replace(fresh, family=p.family, given=p.given, city=p.city, district=p.district)
    elif roll < 0.05:
        kind = "namesake_no_dob"
        other = replace(fresh, family=p.family, given=p.given, city=p.city, district=p.district)
        birth_date = False
    elif roll < 0.08:
        kind = "household_address"
        family = p.family if rng.random() < 0.5 else fresh.family
        other = replace(
            p, family=family, given=fresh.given, born=fresh.born, mobile=fresh.mobile, email=""
        )
    elif roll < 0.10:
        kind = "household_phone"
        other = replace(p, given=fresh.given, born=fresh.born, email=fresh.email)
    else:
        return None
    if other.given == p.given and kind.startswith("household"):
        return None
    row = _row(
        other,
        {"given_name": other.given, "family_name": other.family},
        phone=phone_form(other.mobile, rng),
        address=rng.choice(("full", "short")),
        birth_date=birth_date,
    )
    rec_id = out.add(original.replace("-0", "-x"), row)
    out.negative(original, rec_id, kind)
    return rec_id, other


def people(seed: int) -> Callable[[random.Random], tuple[dict[str, str], dict[str, str]]]:
    """For populations (`bench.population`): a function drawing one new person, as
    (their first record, the record they would give when coming back: another name form,
    phone format and address form, as in `build`)."""
    surnames, given = frequencies.chinese_surnames(), frequencies.chinese_given(seed)
    homophones = _homophones()

    def draw(rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
        p = _person(surnames, given, rng, 0)
        name, _ = name_form(rng.choice(NAME_VARIATIONS), p, rng, homophones)
        again = _row(
            replace(p, email=""),
            name,
            phone=phone_form(p.mobile, rng) if rng.random() < 0.75 else "",
            address=rng.choice(("full", "short", "joined", "pinyin")),
            birth_date=rng.random() < 0.7,
        )
        return _original(p, rng), again

    return draw
