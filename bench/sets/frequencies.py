"""Name frequencies close to real ones, so that common names collide as they do in life.

A set of people drawn uniformly from a few hundred names has no Müller problem and no 张伟
problem: every name is about as rare as every other. Real names follow a Zipf-like law:
Müller is carried by about 0.3% of Germans, Schmidt 0.24%, ...; 王, 李 and 张 are each
carried by about 7% of Chinese people, and 伟, 敏, 静, 丽 are among the most given names.
`Weighted` draws from such a head (a ranked list, share at rank r proportional to 1/r^s)
and a long tail (uniform), with the head's total share stated.

Sources for the rankings: the published top-100 German surnames and the most common
German given names (first-name statistics of the 1950s-1990s cohorts); the Chinese
Ministry of Public Security's 2020 surname ranking (shares in percent, top 100) and its
most common given names. Shares are rounded; only their order of magnitude matters here.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


class Weighted:
    """Draws a name: the ranked head with probability `head_share` (Zipf, exponent `s`,
    or the given weights), otherwise a uniform draw from the tail."""

    def __init__(
        self,
        head: Sequence[str],
        tail: Sequence[str],
        head_share: float,
        *,
        s: float = 1.0,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.head = list(head)
        self.tail = [name for name in dict.fromkeys(tail) if name not in set(head)]
        raw = list(weights) if weights is not None else [1 / (r + 1) ** s for r in range(len(head))]
        self.cumulative = list(itertools.accumulate(raw))
        self.head_share = head_share if self.tail else 1.0

    def share(self, name: str) -> float:
        """The probability of drawing `name` (for checks and documentation)."""
        if name in self.head:
            i = self.head.index(name)
            before = self.cumulative[i - 1] if i else 0.0
            return self.head_share * (self.cumulative[i] - before) / self.cumulative[-1]
        return (1 - self.head_share) / len(self.tail) if name in self.tail else 0.0

    def draw(self, rng: random.Random) -> str:
        if rng.random() < self.head_share:
            x = rng.random() * self.cumulative[-1]
            return self.head[bisect.bisect_right(self.cumulative, x)]
        return rng.choice(self.tail)


GERMAN_SURNAMES = words(
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch "
    "Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann "
    "Hartmann Lange Schmitt Werner Schmitz Krause Meier Lehmann Schmid Schulze Maier Köhler "
    "Herrmann König Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung Hahn "
    "Schubert Vogel Friedrich Keller Günther Frank Berger Winkler Roth Beck Lorenz Baumann "
    "Franke Albrecht Schuster Simon Ludwig Böhm Winter Kraus Martin Schumacher Krämer Vogt "
    "Stein Jäger Otto Sommer Groß Seidel Heinrich Brandt Haas Schreiber Graf Schulte Dietrich "
    "Ziegler Kuhn Kühn Pohl Engel Horn Busch Bergmann Thomas Voigt Sauer Arnold Wolff Pfeiffer"
)
# Share of Germans carrying a top-100 surname: about 12% (Müller alone 0.3%, rank 100 0.03%);
# drawn with exponent 0.6, Müller comes out at about 0.9%: a little heavier than life.
GERMAN_SURNAME_HEAD_SHARE = 0.12

GERMAN_GIVEN_MALE = words(
    "Michael Thomas Andreas Peter Stefan Christian Wolfgang Klaus Jürgen Frank Uwe Bernd "
    "Hans Werner Markus Matthias Dieter Günter Manfred Horst Ralf Helmut Sven Jan Alexander "
    "Martin Tobias Daniel Sebastian Florian Dirk Jens Karl Heinz Gerhard Jörg Holger Torsten "
    "Rainer Lukas Jonas Maximilian Felix Paul Leon Tim Philipp Niklas Patrick"
)
GERMAN_GIVEN_FEMALE = words(
    "Ursula Sabine Petra Monika Andrea Susanne Claudia Karin Birgit Renate Gabriele Elke "
    "Stefanie Nicole Anja Julia Katrin Christine Brigitte Angelika Heike Ingrid Helga "
    "Martina Silke Anna Maria Sandra Melanie Tanja Kerstin Simone Nadine Christina Jessica "
    "Sarah Laura Lena Katharina Lisa Johanna Sophie Hannah Lea Marie Jana Daniela Ute Anke"
)
GERMAN_GIVEN_HEAD_SHARE = 0.6  # the fifty commonest per sex cover most of those cohorts

CHINESE_SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 7.12),
    ("李", 7.00),
    ("张", 6.74),
    ("刘", 5.10),
    ("陈", 4.61),
    ("杨", 3.22),
    ("黄", 2.45),
    ("赵", 2.19),
    ("吴", 2.05),
    ("周", 1.98),
    ("徐", 1.68),
    ("孙", 1.53),
    ("马", 1.45),
    ("朱", 1.31),
    ("胡", 1.31),
    ("郭", 1.18),
    ("何", 1.17),
    ("林", 1.09),
    ("高", 1.07),
    ("罗", 1.03),
    ("郑", 0.94),
    ("梁", 0.87),
    ("谢", 0.81),
    ("宋", 0.77),
    ("唐", 0.76),
    ("许", 0.71),
    ("韩", 0.69),
    ("冯", 0.68),
    ("邓", 0.67),
    ("曹", 0.64),
    ("彭", 0.59),
    ("曾", 0.57),
    ("肖", 0.56),
    ("田", 0.52),
    ("董", 0.51),
    ("袁", 0.50),
    ("潘", 0.49),
    ("于", 0.48),
    ("蒋", 0.47),
    ("蔡", 0.46),
    ("余", 0.45),
    ("杜", 0.43),
    ("叶", 0.42),
    ("程", 0.41),
    ("苏", 0.39),
    ("魏", 0.38),
    ("吕", 0.37),
    ("丁", 0.36),
    ("任", 0.35),
    ("沈", 0.34),
    ("姚", 0.33),
    ("卢", 0.32),
    ("姜", 0.31),
    ("崔", 0.30),
    ("钟", 0.29),
    ("谭", 0.29),
    ("陆", 0.28),
    ("汪", 0.27),
    ("范", 0.27),
    ("金", 0.26),
    ("石", 0.26),
    ("廖", 0.25),
    ("贾", 0.25),
    ("夏", 0.24),
    ("韦", 0.24),
    ("付", 0.23),
    ("方", 0.23),
    ("白", 0.22),
    ("邹", 0.22),
    ("孟", 0.21),
    ("熊", 0.21),
    ("秦", 0.21),
    ("邱", 0.20),
    ("江", 0.20),
    ("尹", 0.19),
    ("薛", 0.19),
    ("闫", 0.18),
    ("段", 0.18),
    ("雷", 0.17),
    ("侯", 0.17),
    ("龙", 0.17),
    ("史", 0.16),
    ("陶", 0.16),
    ("黎", 0.16),
    ("贺", 0.15),
    ("顾", 0.15),
    ("毛", 0.15),
    ("郝", 0.14),
    ("龚", 0.14),
    ("邵", 0.14),
    ("万", 0.13),
    ("钱", 0.13),
    ("严", 0.13),
    ("武", 0.12),
    ("戴", 0.12),
    ("莫", 0.12),
    ("孔", 0.11),
    ("向", 0.11),
    ("汤", 0.11),
    ("常", 0.10),
    # Surnames read otherwise than their character's commonest reading: rare, but each is
    # given a share of 0.25% here so that every set has a few of them.
    ("单", 0.25),
    ("区", 0.25),
    ("缪", 0.25),
    ("解", 0.25),
    ("仇", 0.25),
    ("查", 0.25),
    ("覃", 0.25),
    ("朴", 0.10),
    ("盖", 0.10),
)
# Surname -> its reading as a surname, where pypinyin's commonest reading differs (单 is
# dan as a word, Shan as a surname; 区 qu/Ou; 缪 miu/Miao; 解 jie/Xie; 仇 chou/Qiu; 查
# cha/Zha; 覃 tan/Qin; 朴 pu/Piao; 盖 gai/Ge; 曾 ceng/Zeng).
SURNAME_READINGS = {
    "单": "shan",
    "区": "ou",
    "缪": "miao",
    "解": "xie",
    "仇": "qiu",
    "查": "zha",
    "覃": "qin",
    "朴": "piao",
    "盖": "ge",
    "曾": "zeng",
}

# Most given names in the ID-card registry, commonest first (伟, 芳, 娜 ... each held by
# hundreds of thousands; 张伟 alone by about 300,000 people).
CHINESE_GIVEN_COMMON = words(
    "伟 芳 娜 敏 静 秀英 丽 强 磊 洋 艳 勇 军 杰 娟 涛 超 明 霞 秀兰 刚 平 燕 辉 玲 桂英 "
    "丹 萍 鹏 华 红 玉兰 飞 桂兰 英 梅 鑫 波 斌 宇 浩 凯 秀珍 健 俊 帆 帅 旭 宁 龙 林 "
    "欢 阳 建华 亮 成 佳 建国 建军 晶 峰 婷 倩 雪 琳 颖 慧 建平 志强 海燕 红梅 丽娟 "
    "子涵 浩然 梓涵 一诺 欣怡 宇轩 子轩 雨桐 思彤 梓萱"
)
# 0.10 puts 伟 at about 1% and 张伟 at about 0.07% of people: three times life, to stress.
CHINESE_GIVEN_HEAD_SHARE = 0.10
# Characters that two-character given names are composed of (the long tail: most people
# born after 1980 have a two-character name that few others have).
CHINESE_NAME_CHARACTERS = (
    "伟芳娜敏静秀英丽强磊洋艳勇军杰娟涛超明霞兰刚平燕辉玲桂丹萍鹏华红玉飞梅鑫波斌宇浩凯"
    "珍健俊帆帅旭宁龙林欢阳建亮成佳国晶峰婷倩雪琳颖慧志海文思雨梓子涵然轩怡欣诺彤萱晨"
    "博嘉睿瑞泽昊天晓春秋冬松柏清源家如若安心悦可馨怡语嫣梦琪佩雯薇蕾蓉荣光耀德仁义礼"
    "智信忠孝美丰盛昌隆兴旺福禄寿喜乐康泰永长远新航远帆一倩"
)


def chinese_surnames() -> Weighted:
    names = [name for name, _ in CHINESE_SURNAMES]
    return Weighted(names, (), 1.0, weights=[share for _, share in CHINESE_SURNAMES])


def chinese_given(rng_pool_seed: int = 0) -> Weighted:
    """Common given names at the head, two-character compositions as the tail."""
    pool = random.Random(rng_pool_seed)
    chars = sorted(set(CHINESE_NAME_CHARACTERS))
    tail = ["".join(pool.sample(chars, 2)) for _ in range(20_000)]
    return Weighted(CHINESE_GIVEN_COMMON, tail, CHINESE_GIVEN_HEAD_SHARE, s=0.8)


def german_surnames(tail: Sequence[str]) -> Weighted:
    return Weighted(GERMAN_SURNAMES, tail, GERMAN_SURNAME_HEAD_SHARE, s=0.6)


def german_given(tail: Sequence[str], *, female: bool) -> Weighted:
    head = GERMAN_GIVEN_FEMALE if female else GERMAN_GIVEN_MALE
    return Weighted(head, tail, GERMAN_GIVEN_HEAD_SHARE, s=0.7)
