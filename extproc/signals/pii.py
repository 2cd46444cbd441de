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
    optional area code in parentheses, incl. the `(0)` trunk notation; 7–15 digits;
  * North American: `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `1-800-555-0199`
    (area and exchange codes start with 2–9; at least one separator or parentheses);
  * national with trunk prefix 0: `030 1234567`, `(030) 1234567`, `020 7946 0958`, `06 12 34 56 78`,
    `090-1234-5678`; 9–12 digits and at least one separator.
  Not: plain digit runs (order numbers, IDs, card numbers), dates such as `2024-11-22`,
  `22.11.2024`, `01.02.2024 10:30`, amounts, version strings, IPs, numbers glued to letters or
  hyphens (`ORD-415-555-2671`), and numbers made of one repeated digit.
- payment_card: 13–19 digits, contiguous or grouped 4-4-4-4(-3) / 4-6-5 / 4-6-4 with one consistent
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
  version word (`version 1.2.3.4`, `v 1.2.3.4`, `release`, `build`); IPv6 validated by `ipaddress`
  that contains at least one decimal digit (so code like `Add::add` or `dead::beef` is not one).
  Private, loopback and documentation ranges count: a router cannot know which ones are personal.
- us_ssn: `AAA-GG-SSSS` with dashes only; not area 000, 666 or 900–999, group 00, serial 0000, nor
  the two famous advertising numbers 078-05-1120 and 219-09-9999; not glued to digits, letters or
  hyphens (`ID-123-45-6789`).

Speed: every kind is located by a cheap anchor first (`in` checks and regexes that start with a
literal, e.g. `@`, `+`, `(`, `:`), and all digit-based kinds share one pass over the text whose
lookahead only accepts number shapes worth a closer look. Candidate regexes are then run at those
positions only. All regexes are linear or bounded (no nested unbounded quantifiers), and the scan of
a kind stops at its first valid match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from functools import lru_cache

__all__ = ["PII_KINDS", "detect_pii"]

PII_KINDS: tuple[str, ...] = ("email", "phone", "payment_card", "iban", "ip_address", "us_ssn")

# --------------------------------------------------------------------------------------------------
# email

_EMAIL = re.compile(
    r"(?<![\w.%+\-])"
    r"[\w%+\-]+(?:\.[\w%+\-]+)*"  # local part: dot-separated runs, no leading/trailing/double dot
    r"@"
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+"  # host labels
    r"(?:[^\W\d_]{2,24}|xn--[a-zA-Z0-9]{1,59})"  # TLD: letters, or punycode
    r"(?![\w\-@]|\.[^\W_])"  # not followed by more host or a longer TLD
)
_SCP_REMOTE = re.compile(r":[\w~/]")  # git@github.com:org/repo.git is an SSH remote, not an address
_EMAIL_WINDOW = 64 + 1 + 255  # max local part + @ + max domain


def _has_email(text: str) -> bool:
    at = text.find("@")
    while at != -1:
        lo, hi = max(0, at - 64), at + 256
        for m in _EMAIL.finditer(text, lo, hi):
            if m.end() < len(text) and _SCP_REMOTE.match(text, m.end()):
                continue
            return True
        # the window covered every address whose @ lies before `hi`; continue after it
        at = text.find("@", max(at + 1, hi - 64))
    return False


# --------------------------------------------------------------------------------------------------
# digit-based kinds: shapes (lookaheads for the shared anchor) and full candidate regexes

_SEP = r"[ .\-]"

# A candidate's end: not followed by a word character or by a separator and another digit.
_END = r"(?![\w]|[.,\-/][0-9])"

_SSN = re.compile(r"([0-9]{3})-([0-9]{2})-([0-9]{4})" + _END)
_SSN_SHAPE = r"[0-9]{3}-[0-9]{2}-[0-9]{4}"
_SSN_ADVERTISING = frozenset({"078051120", "219099999"})

_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![\w]|\.[0-9])")
_IPV4_SHAPE = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]"
_VERSION_WORD = re.compile(r"(?:\b(?:version|ver|release|build|rev|revision)\.?|\bv)\s*[:=#]?\s*$")

_CARD = re.compile(
    r"(?:[0-9]{13,19}"
    r"|[0-9]{4}(?P<s>[ \-])[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}(?:(?P=s)[0-9]{3})?"
    r"|[0-9]{4}(?P<t>[ \-])[0-9]{6}(?P=t)[0-9]{4,5})"
    r"(?![\w]|[.,\-][0-9])"
)
_CARD_SHAPE = r"[0-9]{4}[ \-]?[0-9]{4}"

_PHONE_NANP = re.compile(
    r"(?:1[ .\-])?(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}" + _END
)
_PHONE_NANP_SHAPE = r"(?:1[ .\-])?[2-9][0-9]{2}[ .\-][2-9][0-9]{2}[ .\-][0-9]{4}"

_PHONE_NATIONAL = re.compile(
    r"(?:\(0[1-9][0-9]{0,4}\)[ ]?|0[1-9][0-9]{0,4}[ /.\-])[0-9]{2,8}(?:[ .\-][0-9]{2,8}){0,4}" + _END
)
_PHONE_NATIONAL_SHAPE = r"0[1-9][0-9]{0,4}[ /.\-][0-9]{2}"

_PHONE_INTL = re.compile(
    r"(?:\+|00)[1-9](?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9])){5,17}"
    r"(?![ .\-]?[0-9]|\w)"
)
_PHONE_INTL00_SHAPE = r"00[1-9]"

_DATE_PREFIX = re.compile(r"[0-9]{1,2}[./\-][0-9]{1,2}[./\-](?:[0-9]{4}|[0-9]{2})(?![0-9])|[0-9]{4}[./\-][0-9]{1,2}[./\-]")

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

_IPV6_ANCHOR = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f:]{2,39}(?:(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![\w:]|\.[0-9])"
)

_PLUS_ANCHOR = re.compile(r"\+(?<![\w+]\+)(?=[1-9])")
_PAREN_ANCHOR = re.compile(r"\((?<![\w]\()(?=[0-9]{3,5}\))")

_DIGITS_ONLY = re.compile(r"[^0-9]")


def _digits(s: str) -> str:
    return _DIGITS_ONLY.sub("", s)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


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


def _card_at(text: str, pos: int) -> bool:
    m = _CARD.match(text, pos)
    if not m:
        return False
    d = _digits(m.group())
    return 13 <= len(d) <= 19 and len(set(d)) > 1 and _luhn_ok(d) and _card_network_ok(d)


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
    return not _VERSION_WORD.search(text[max(0, pos - 16) : pos].lower())


def _phone_ok(candidate: str, lo: int, hi: int) -> bool:
    d = _digits(candidate)
    return lo <= len(d) <= hi and len(set(d)) > 1


def _phone_intl_at(text: str, pos: int) -> bool:
    m = _PHONE_INTL.match(text, pos)
    if not m:
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
    if m and _phone_ok(m.group(), 9, 12) and not _DATE_PREFIX.match(text, pos):
        return True
    return text.startswith("00", pos) and _phone_intl_at(text, pos)


def _iban_at(text: str, pos: int) -> bool:
    m = _IBAN.match(text, pos)
    if not m:
        return False
    country, check, rest = m.groups()
    length = IBAN_LENGTHS.get(country)
    if length is None:
        return False
    need = length - 4
    bban: list[str] = []
    i = m.start(3)
    while i < m.end(3) and len(bban) < need:
        if text[i] != " ":
            bban.append(text[i])
        i += 1
    if len(bban) < need:
        return False
    if i < len(text) and (text[i].isalnum() or text[i] == "_"):  # glued to more letters/digits
        return False
    numeric = "".join(str(int(c, 36)) for c in (*bban, *country, *check))
    return int(numeric) % 97 == 1


def _has_ipv6(text: str) -> bool:
    scanned_to = 0
    for anchor in _IPV6_ANCHOR.finditer(text):
        if anchor.start() < scanned_to:
            continue
        lo, hi = max(0, anchor.start() - 40), min(len(text), anchor.end() + 40)
        for m in _IPV6.finditer(text, lo, hi):
            s = m.group()
            if s.count(":") < 2 or not any(c.isdigit() for c in s):
                continue
            try:
                ipaddress.IPv6Address(s)
            except ValueError:
                continue
            return True
        scanned_to = hi - 40  # candidates crossing the window end are picked up by later anchors
    return False


# The shared pass over digits. Each kind contributes a lookahead shape; the anchor is a digit that
# starts a number (not preceded by a word character, `.`, `,`, `+`, `-`, `/`) and fits one shape,
# or the first check digit of an IBAN (two upper-case letters not glued to a word).
_SHAPES: dict[str, tuple[str, ...]] = {
    "phone": (_PHONE_NANP_SHAPE, _PHONE_NATIONAL_SHAPE, _PHONE_INTL00_SHAPE),
    "payment_card": (_CARD_SHAPE,),
    "ip_address": (_IPV4_SHAPE,),
    "us_ssn": (_SSN_SHAPE,),
}
_IBAN_ANCHOR = r"(?<=[A-Z]{2}[0-9])(?<![A-Za-z0-9_][A-Z]{2}[0-9])(?=[0-9])"


@lru_cache(maxsize=64)
def _digit_anchor(kinds: frozenset[str]) -> re.Pattern[str] | None:
    shapes = [s for kind in PII_KINDS if kind in kinds for s in _SHAPES.get(kind, ())]
    branches = []
    if shapes:
        branches.append(r"(?<![\w.,+\-/][0-9])(?=" + "|".join(shapes) + ")")
    if "iban" in kinds:
        branches.append(_IBAN_ANCHOR)
    if not branches:
        return None
    # Starting with the character class lets the regex engine skip non-digits quickly.
    return re.compile("[0-9](?:" + "|".join(branches) + ")")


_DIGIT_CHECKS: tuple[tuple[str, Callable[[str, int], bool]], ...] = (
    ("us_ssn", _ssn_at),
    ("payment_card", _card_at),
    ("ip_address", _ipv4_at),
    ("phone", _phone_at),
)


def _scan_digits(text: str, pending: set[str], found: set[str]) -> None:
    anchor = _digit_anchor(frozenset(pending))
    if anchor is None:
        return
    for m in anchor.finditer(text):
        pos = m.start()
        if pos >= 2 and "A" <= text[pos - 1] <= "Z":  # IBAN branch: country code before the digit
            if "iban" in pending and _iban_at(text, pos - 2):
                found.add("iban")
                pending.discard("iban")
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
        elif "(" in text and any(_phone_at(text, m.start()) for m in _PAREN_ANCHOR.finditer(text)):
            found.add("phone")
    if "ip_address" in wanted and ":" in text and _has_ipv6(text):
        found.add("ip_address")
    pending = set(wanted - found - {"email"})
    if pending:
        _scan_digits(text, pending, found)
    return frozenset(found)
