"""Regex-and-checksum PII detection: which kinds of personal data a text contains, never the data.

`detect_pii(text, kinds)` returns the subset of `PII_KINDS` found. No function in this module
returns, logs or stores a matched value: results are kind names only, so they are safe to put in
headers, metrics and logs.

What counts as a match (a "near miss" is anything that looks similar but fails the rule):

- email: `local@domain.tld`; dot-separated local part (no leading, trailing or doubled dots),
  hostname labels, an alphabetic (or `xn--`) TLD. A sentence-ending dot is not part of the address.
  Not: `@handles`, `@decorators`, `user@localhost`, `pkg@1.2.3`, `john.@x.com`, and scp-style git
  remotes (`git@github.com:org/repo`).
- phone: one of
  * international: `+CC…` (or `00CC…` written with separators), single separators (space . -) and an
    optional area code in parentheses, incl. the `(0)` trunk notation; 7-15 digits;
  * North American: `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `1-800-555-0199`
    (area and exchange codes start with 2-9; at least one separator or parentheses);
  * national with trunk prefix 0: `030 1234567`, `(030) 1234567`, `020 7946 0958`, `06 12 34 56 78`,
    `090-1234-5678`; 9-12 digits and at least one separator.
  Not: plain digit runs (order numbers, IDs, card numbers), signed decimals (`+35236450.6`), dates
  such as `2024-11-22`, `22.11.2024`, `01.02.2024 10:30`, byte dumps (`3f 01 00 00 00 50`),
  counting sequences (`01 02 03 04 05`), amounts, version strings, IPs, numbers glued to letters or
  hyphens (`ORD-415-555-2671`), and numbers made of one repeated digit.
- payment_card: 13-19 digits, contiguous or grouped 4-4-4-4(-3) / 4-6-5 / 4-6-4 with one consistent
  separator (space or dash), Luhn-valid, and a length/prefix that a major network issues (Visa,
  Mastercard incl. 2-series, Amex, Discover, Diners, JCB, UnionPay, Maestro, Mir, RuPay, Troy).
  Not: Luhn failures, Luhn-valid numbers with no network prefix (e.g. starting with 0, 1, 7),
  longer digit runs, numbers glued to letters, dots or hyphens.
- iban: two upper-case country letters + 2 check digits + BBAN, with or without single spaces,
  exactly the registered length for the country (table below, ~80 countries; other country codes are
  not matched), mod-97 == 1. Not: wrong check digits, wrong length, lower case, glued to other
  letters or digits.
- ip_address: IPv4 dotted quads validated by `ipaddress` (no octet > 255, no leading zeros), not part
  of a longer dotted run (`1.2.3.4.5`) or glued to letters (`v1.2.3.4`), and not right after a
  version or section word (`version 1.2.3.4`, `v 1.2.3.4`, `release`, `build`, `section 8.2.4.44`,
  `§ 1.2.3.4`); IPv6 validated by `ipaddress` that contains at least one decimal digit (so code
  like `Add::add` or `dead::beef` is not one) and is not followed by `{`, `<` or `(` (Rust paths
  such as `f32::{min, max}`).
  Private, loopback and documentation ranges count: a router cannot know which ones are personal.
- us_ssn: `AAA-GG-SSSS` with dashes only; not area 000, 666 or 900-999, group 00, serial 0000, nor
  the two famous advertising numbers 078-05-1120 and 219-09-9999; not glued to digits, letters or
  hyphens (`ID-123-45-6789`).

Speed: every kind is located by a cheap anchor first (`in` checks and regexes that start with a
literal, e.g. `@`, `+`, `(`, `:`), and all digit-based kinds share one pass over the text whose
lookahead only accepts number shapes worth a closer look. Candidate regexes are then run at those
positions only. All regexes are linear or bounded (no nested unbounded quantifiers), and the scan of
a kind stops at its first valid match. Measured for all kinds on 1 MB (2-core dev box, other jobs
running): prose 6-10 ms, Markdown docs 7-11 ms, JSON logs 14 ms, code 15 ms, a numeric CSV 27 ms,
CJK text 3 ms; degenerate inputs (1 MB of `@`, `1:`, `0 `...) stay under ~0.2 s.
Numbers are delimited by ASCII letters and digits only, so numbers glued to CJK text are found.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable, Collection
from functools import lru_cache

__all__ = ["PII_KINDS", "detect_pii"]

PII_KINDS: tuple[str, ...] = ("email", "phone", "payment_card", "iban", "ip_address", "us_ssn")

# --------------------------------------------------------------------------------------------------
# email

# Found from the `@` (a literal, so the regex engine jumps from one `@` to the next); the local
# part is then checked backwards from the `@` within its 64-character limit.
_EMAIL_DOMAIN = re.compile(
    r"@(?<=[\w%+\-]@)"  # something that can end a local part right before the @
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+"  # host labels
    r"(?:[^\W\d_]{2,24}|xn--[a-zA-Z0-9]{1,59})"  # TLD: letters, or punycode
    r"(?![\w\-@]|\.[^\W_])"  # not followed by more host name or a longer TLD
)
# dot-separated runs (no leading, trailing or doubled dot) ending at the @ (endpos)
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+\-])[\w%+\-]+(?:\.[\w%+\-]+)*\Z")
_SCP_REMOTE = re.compile(r":[\w~/]")  # git@github.com:org/repo.git is an SSH remote, not an address


def _has_email(text: str) -> bool:
    for m in _EMAIL_DOMAIN.finditer(text):
        at = m.start()
        if _EMAIL_LOCAL.search(text, max(0, at - 64), at) and not _SCP_REMOTE.match(text, m.end()):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# digit-based kinds: candidate regexes, matched at the anchors found by the shared pass below

# Numbers are delimited by ASCII letters and digits only: scripts written without spaces (CJK, Thai)
# glue numbers to words (`携帯は090-1234-5678です`).
_ASCII_WORD = "A-Za-z0-9_"
# A candidate's end: not followed by a word character or by a separator and another digit.
_END = rf"(?![{_ASCII_WORD}]|[.,\-/][0-9])"

_SSN = re.compile(r"([0-9]{3})-([0-9]{2})-([0-9]{4})" + _END)
_SSN_ADVERTISING = frozenset({"078051120", "219099999"})

_IPV4 = re.compile(rf"[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}(?![{_ASCII_WORD}]|\.[0-9])")
# Dotted quads right after these words are version or section numbers (`version 1.2.3.4`, `v 1.2.3.4`,
# `sections "8.2.4.44`), not addresses.
_VERSION_WORD = re.compile(
    r"(?:\b(?:versions?|ver|releases?|build|rev|revision|sections?|chapters?|clauses?|paragraphs?|figures?|tables?)"
    r"\.?|\bv|\u00a7)\s*[:=#]?\s*[\"'(\[]?$"
)

_CARD = re.compile(
    r"(?:[0-9]{13,19}"
    r"|[0-9]{4}(?P<s>[ \-])[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}(?:(?P=s)[0-9]{3})?"
    r"|[0-9]{4}(?P<t>[ \-])[0-9]{6}(?P=t)[0-9]{4,5})"
    rf"(?![{_ASCII_WORD}]|[.,\-][0-9]|(?P=s)[0-9]{{4}})"  # not part of a longer number or a fifth 4-digit group
)

_PHONE_NANP = re.compile(r"(?:1[ .\-])?(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}" + _END)

_PHONE_NATIONAL = re.compile(
    r"(?:\(0[1-9][0-9]{0,4}\)[ ]?|0[1-9][0-9]{0,4}[ /.\-])[0-9]{2,8}(?:[ .\-][0-9]{2,8}){0,4}" + _END
)

# `01 02 03 04 05 06 07 08` is a byte dump, not a French number: a national number must not be
# one stretch of a longer run of two-character groups.
_HEX_PAIR = r"(?:[0-9][0-9A-Fa-f]|[A-Fa-f][0-9])"  # with a digit: `ce`, `de` are words, `3f`, `a0` bytes
_HEX_PAIR_BEFORE = re.compile(rf"(?<![0-9A-Za-z]){_HEX_PAIR} \Z")
_HEX_PAIR_AFTER = re.compile(rf" {_HEX_PAIR}(?![0-9A-Za-z])")

_SIGNED_DECIMAL = re.compile(r"\+[0-9]+\.[0-9]+")  # `Decimal('+35236450.6')`
_PHONE_INTL = re.compile(
    r"(?:\+|00)[1-9](?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9])){5,17}"
    rf"(?![ .\-]?[0-9]|[{_ASCII_WORD}])"
)

_DATE_PREFIX = re.compile(
    r"[0-9]{1,2}[./\-][0-9]{1,2}[./\-](?:[0-9]{4}|[0-9]{2})(?![0-9])|[0-9]{4}[./\-][0-9]{1,2}[./\-]"
)

_IBAN = re.compile(r"([A-Z]{2})([0-9]{2})((?: ?[A-Z0-9]){11,34})")

# Registered IBAN lengths (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_HEX = "[0-9A-Fa-f]"
# Where an IPv6 address can be: a `::` that starts an address or follows a hex group that does, or a
# colon followed by six more groups (the full eight-group form, or six groups and an IPv4 tail).
# Times (`10:30:00`), MAC addresses and C++/Rust paths (`std::vector`, `Foo::bar`) are not anchors.
_IPV6_ANCHOR = re.compile(
    "::(?<!:::)(?:"
    + "|".join(
        [rf"(?<![{_ASCII_WORD}:.]::)"]
        + [f"(?<=[^{_ASCII_WORD}.]{_HEX}{{{k}}}::)" for k in range(1, 5)]
        + [f"(?<=^{_HEX}{{{k}}}::)" for k in range(1, 5)]
    )
    + f")(?={_HEX}{{1,4}}(?![{_ASCII_WORD}])|(?![{_ASCII_WORD}:]))"  # and ends the address or is followed by a group
    + f"|:(?=(?:{_HEX}{{1,4}}:){{5}}{_HEX}{{1,4}}[:.])"
)

_PLUS_ANCHOR = re.compile(rf"\+(?<![{_ASCII_WORD}+]\+)(?=[1-9][0-9 .\-()]{{6}})")
_PAREN_ANCHOR = re.compile(rf"\((?<![{_ASCII_WORD}]\()(?=[0-9]{{2,5}}\))")

_DIGITS_ONLY = re.compile(r"[^0-9]")
_GROUPS = re.compile(r"[0-9]+")


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _digits(s: str) -> str:
    return _DIGITS_ONLY.sub("", s)


_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def _luhn_ok(digits: str) -> bool:
    b = digits.encode("ascii")
    plain = sum(b[-1::-2]) - 48 * len(b[-1::-2])
    doubled = sum(b[-2::-2].translate(_LUHN_DOUBLED))
    return (plain + doubled) % 10 == 0


def _card_network_ok(d: str) -> bool:
    """Length and issuer prefix of a major card network."""
    n = len(d)
    p2, p4 = int(d[:2]), int(d[:4])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # Amex
        return n == 15
    if p2 == 36 or 300 <= int(d[:3]) <= 305 or p2 in (38, 39):  # Diners
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589 or 2200 <= p4 <= 2204:  # JCB, Mir
        return 16 <= n <= 19
    if d[0] == "6" or p2 in (50, 56, 57, 58):  # Discover, UnionPay, Maestro, RuPay
        return 13 <= n <= 19
    if p2 in (81, 82) or p4 == 9792:  # RuPay, Troy
        return n == 16
    return False


def _card_ok(candidate: str) -> bool:
    d = _digits(candidate)
    return 13 <= len(d) <= 19 and _card_network_ok(d) and len(set(d)) > 1 and _luhn_ok(d)


def _ssn_at(text: str, pos: int) -> bool:
    m = _SSN.match(text, pos)
    if not m:
        return False
    area, group, serial = m.groups()
    if area == "000" or area == "666" or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_ADVERTISING


def _ipv4_at(text: str, pos: int) -> bool:
    m = _IPV4.match(text, pos)
    if not m:
        return False
    try:
        ipaddress.IPv4Address(m.group())
    except ValueError:
        return False
    return not _VERSION_WORD.search(text[max(0, pos - 20) : pos].lower())


def _phone_ok(candidate: str, lo: int, hi: int) -> bool:
    d = _digits(candidate)
    return lo <= len(d) <= hi and len(set(d)) > 1


def _counting(candidate: str) -> bool:
    """`01 02 03 04 05`: groups counting up or down by one are an example sequence, not a number."""
    groups = [int(g) for g in _GROUPS.findall(candidate)]
    steps = {b - a for a, b in itertools.pairwise(groups)}
    return len(groups) >= 4 and len(steps) == 1 and steps <= {1, -1}


def _phone_intl_at(text: str, pos: int) -> bool:
    m = _PHONE_INTL.match(text, pos)
    if not m or _SIGNED_DECIMAL.fullmatch(m.group()):
        return False
    s = m.group()
    if s.startswith("00"):
        if not any(c in s for c in " .-("):  # a plain zero-padded number is an ID, not a phone
            return False
        s = s[2:]
    return _phone_ok(s.replace("(0)", ""), 7, 15)


def _phone_at(text: str, pos: int) -> bool:
    """A North American or national (trunk prefix 0) number starting at `pos` (a digit or `(`)."""
    m = _PHONE_NANP.match(text, pos)
    if m and _phone_ok(m.group(), 10, 11):
        return True
    m = _PHONE_NATIONAL.match(text, pos)
    if (
        m
        and _phone_ok(m.group(), 9, 12)
        and not _DATE_PREFIX.match(text, pos)
        and not _SSN.fullmatch(m.group())
        and not _HEX_PAIR_BEFORE.search(text, max(0, pos - 3), pos)
        and not _HEX_PAIR_AFTER.match(text, m.end())
        and not _counting(m.group())
    ):
        return True
    return text.startswith("00", pos) and _phone_intl_at(text, pos)


def _iban_at(text: str, pos: int) -> tuple[int, bool]:
    """(end, valid) of an IBAN-shaped token at `pos` (a known country code, its exact length, not glued
    to more letters or digits), or (-1, False). `valid`: the mod-97 check passes."""
    m = _IBAN.match(text, pos)
    if not m:
        return -1, False
    country, check, _ = m.groups()
    length = IBAN_LENGTHS.get(country)
    if length is None:
        return -1, False
    need = length - 4
    bban: list[str] = []
    i, end = m.start(3), m.end(3)
    while i < end and len(bban) < need:
        if text[i] != " ":
            bban.append(text[i])
        i += 1
    if len(bban) < need or (i < len(text) and _is_word(text[i])):
        return -1, False
    numeric = "".join(str(int(c, 36)) for c in (*bban, *country, *check))
    return i, int(numeric) % 97 == 1


def _ipv6_ok(s: str) -> bool:
    if s.count(":") < 2 or not any(c.isdigit() for c in s):
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]*")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_IPV6_MAX = 56  # longer runs are not addresses


def _has_ipv6(text: str) -> bool:
    """The candidate is the run of hex digits, colons and dots around an anchor, not glued to a word."""
    n = len(text)
    run_end = -1
    for anchor in _IPV6_ANCHOR.finditer(text):
        p = anchor.start()
        if p < run_end:  # same run as the previous anchor: already judged
            continue
        start = p
        while start > 0 and p - start <= _IPV6_MAX and text[start - 1] in _IPV6_CHARS:
            start -= 1
        run_end = _IPV6_RUN.match(text, p).end()  # type: ignore[union-attr]  # `*` always matches
        if run_end - start > _IPV6_MAX or (start > 0 and _is_word(text[start - 1])):
            continue
        if run_end < n and (_is_word(text[run_end]) or text[run_end] in "{<("):  # `f32::{min, max}`
            continue
        if not _ipv6_ok(text[start:run_end].strip(".")):
            continue
        return True
    return False


# The shared pass over digits. The anchor is a digit that starts a number (not preceded by a word
# character, `.`, `,`, `+`, `-` or `/`) and begins one of the shapes below, or the first check digit
# of an IBAN (two upper-case letters not glued to a word). The regex starts with the digit class, so
# the engine skips other characters quickly; the shapes are therefore written as (first digit,
# rest): a lookbehind on the consumed digit and a lookahead for the rest.
_SHAPES: dict[str, tuple[tuple[str, str], ...]] = {
    "us_ssn": (("", r"[0-9]{2}-[0-9]{2}-[0-9]{4}"),),
    "ip_address": (("", r"[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]"),),
    "phone": (
        ("1", r"[ .\-][2-9][0-9]{2}[ .\-][2-9][0-9]{2}[ .\-][0-9]{4}"),  # 1-800-555-0199
        ("[2-9]", r"[0-9]{2}[ .\-][2-9][0-9]{2}[ .\-][0-9]{4}"),  # 415-555-2671
        ("0", r"[1-9][0-9]{0,4}[ /.\-][0-9]{2}"),  # 030 1234567
        ("0", r"0[1-9]"),  # 0049 30 1234567
    ),
}
# Card- and IBAN-shaped tokens are always looked at, even when not asked for: their groups must not
# be read as phone numbers (`0044 0532` inside an IBAN, `0123 4567 8901` inside a card number).
_CARD_SHAPE = ("", r"[0-9]{3}[ \-]?[0-9]{4}")
_IBAN_ANCHOR = r"(?<=[A-Z]{2}[0-9])(?<![A-Za-z0-9_][A-Z]{2}[0-9])(?=[0-9])"


@lru_cache(maxsize=16)
def _digit_anchor(kinds: frozenset[str]) -> re.Pattern[str]:
    shapes = [_CARD_SHAPE, *(shape for kind in PII_KINDS if kind in kinds for shape in _SHAPES.get(kind, ()))]
    starts = "|".join(f"(?<={first})(?={rest})" if first else f"(?={rest})" for first, rest in shapes)
    return re.compile(f"[0-9](?<![0-9][0-9])(?:(?<![{_ASCII_WORD}.,+\\-/][0-9])(?:{starts})|{_IBAN_ANCHOR})")


_DIGIT_CHECKS: tuple[tuple[str, Callable[[str, int], bool]], ...] = (
    ("us_ssn", _ssn_at),
    ("ip_address", _ipv4_at),
    ("phone", _phone_at),
)


def _scan_digits(text: str, pending: set[str], found: set[str]) -> None:
    anchor = _digit_anchor(frozenset(pending & _SHAPES.keys()))
    skip_to = -1
    for m in anchor.finditer(text):
        pos = m.start()
        if pos < skip_to:
            continue
        if pos >= 2 and "A" <= text[pos - 1] <= "Z":  # IBAN branch: country code before the digit
            end, valid = _iban_at(text, pos - 2)
            if end >= 0:
                skip_to = end
                if valid and "iban" in pending:
                    found.add("iban")
                    pending.discard("iban")
        elif card := _CARD.match(text, pos):
            skip_to = card.end()  # a card-shaped number is not also a phone, SSN or IP
            if "payment_card" in pending and _card_ok(card.group()):
                found.add("payment_card")
                pending.discard("payment_card")
        else:
            for kind, check in _DIGIT_CHECKS:
                if kind in pending and check(text, pos):
                    found.add(kind)
                    pending.discard(kind)
        if not pending:
            return


def _normalize_kinds(kinds: Collection[str]) -> frozenset[str]:
    wanted = frozenset((kinds,) if isinstance(kinds, str) else kinds)
    unknown = wanted.difference(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)} (supported: {', '.join(PII_KINDS)})")
    return wanted


def detect_pii(text: str, kinds: Collection[str] = PII_KINDS) -> frozenset[str]:
    """The kinds of PII in `text`, among `kinds` (default: all of `PII_KINDS`).

    Returns kind names only, never the matched values. Raises ValueError for an unknown kind.
    """
    wanted = _normalize_kinds(kinds)
    found: set[str] = set()
    if not text or not wanted:
        return frozenset()
    if "email" in wanted and "@" in text and _has_email(text):
        found.add("email")
    if "phone" in wanted:
        if "+" in text and any(_phone_intl_at(text, m.start()) for m in _PLUS_ANCHOR.finditer(text)):
            found.add("phone")
        if (
            "phone" not in found
            and "(" in text
            and any(_phone_at(text, m.start()) for m in _PAREN_ANCHOR.finditer(text))
        ):
            found.add("phone")
    if "ip_address" in wanted and ":" in text and _has_ipv6(text):
        found.add("ip_address")
    pending = set(wanted - found - {"email"})
    if pending:
        _scan_digits(text, pending, found)
    return frozenset(found)
