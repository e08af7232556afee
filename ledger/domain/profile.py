"""What a valid customer profile value is, and the one canonical form it is stored in:
every way in (CLI, imports, API) goes through here, so events only hold normalised data.

Violation reasons are fixed phrases. Input is personal data and errors reach logs and
responses, so no value nor any part of one is ever repeated back, only field names;
pydantic's own messages are never passed on, because they quote the input.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import date, datetime
from typing import Annotated, Any

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainValidator
from pydantic_core import PydanticCustomError, ValidationError
from pydantic_core.core_schema import ValidationInfo

from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.text import problem as storable_problem

PERSONAL_FIELDS: tuple[str, ...] = (
    "given_name",
    "family_name",
    "emails",
    "phones",
    "addresses",
    "birth_date",
    "external_ids",
)
PUBLIC_FIELDS: tuple[str, ...] = ("locale", "tags")  # non-personal, stored readable
ADDRESS_FIELDS: tuple[str, ...] = (
    "street_number",
    "address_line1",
    "address_line2",
    "locality",
    "region",
    "postcode",
    "country",
)
EXTERNAL_ID_PREFIX = "external_id:"

MAX_TEXT, MAX_EMAILS, MAX_PHONES, MAX_ADDRESSES, MAX_TAGS = 200, 20, 20, 10, 50
EARLIEST_BIRTH_DATE = date(1900, 1, 1)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
_LOCALE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ALPHA_2 = re.compile(r"[A-Z]{2}")


def _bad(reason: str) -> PydanticCustomError:
    """One error type for all our rules, so the mapping back to violations can tell our
    fixed reasons (safe to show) from pydantic's messages (which quote the input)."""
    return PydanticCustomError("profile", reason)


def _text(value: object, *, collapse: bool = False) -> str | None:
    """Canonical text, or None when nothing is left (empty means "absent" on registration and
    "clear" on change). NFC makes visually equal text compare equal; control characters
    would break the one-line rendering of every view and log line."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("must be a string")
    text = unicodedata.normalize("NFC", value)
    reason = storable_problem(text)  # before collapsing: a tab or newline is refused too
    if reason is not None:
        raise _bad(reason)
    text = " ".join(text.split()) if collapse else text.strip()
    if len(text) > MAX_TEXT:
        raise _bad(f"too long (max {MAX_TEXT} characters)")
    return text or None


def _item(value: object) -> str:
    """List items and mapping values cannot be "cleared" one by one: empty is an error."""
    text = _text(value)
    if text is None:
        raise _bad("must not be empty" if isinstance(value, str) else "must be a string")
    return text


def _name(value: object) -> str | None:
    """Names are compared and shown on one line, so whitespace runs collapse to one space."""
    return _text(value, collapse=True)


def _email(value: object) -> str:
    """The library's normalised form (lower-case domain, IDN in Unicode) makes the same
    address typed two ways one value."""
    try:
        return validate_email(_item(value), check_deliverability=False).normalized
    except EmailNotValidError:
        raise _bad("not a valid email address") from None


def _phone(value: object, info: ValidationInfo) -> str:
    """E.164 makes "030 123456" and "+49 30 123456" the same number; a national number is
    only meaningful with a region, which the caller chose in `_phone_region`."""
    text = _item(value)
    region = (info.context or {}).get("region")
    international = text.startswith("+")
    if region is None and not international:
        raise _bad("needs an international prefix (+CC) or a default region")
    reason = "not a valid phone number" + ("" if international else f" for region {region}")
    try:
        number = phonenumbers.parse(text, None if international else region)
    except phonenumbers.NumberParseException:
        raise _bad(reason) from None
    if not phonenumbers.is_valid_number(number):
        raise _bad(reason)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _country(value: object) -> str:
    """ASCII only, so that no exotic letter upper-cases its way into a real code."""
    text = _text(value) or ""
    code = text.upper() if text.isascii() else ""
    if not _ALPHA_2.fullmatch(code) or not pycountry.countries.get(alpha_2=code):
        raise _bad("not an ISO 3166-1 alpha-2 country code")
    return code


def _birth_date(value: object) -> str | None:
    """Strict YYYY-MM-DD: `fromisoformat` alone also takes week dates and compact forms. A
    datetime is refused, not truncated: its date depends on a time zone we do not know."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime) or not isinstance(value, date | str):
        raise _bad("must be a date (YYYY-MM-DD)")
    if isinstance(value, str):
        text = value.strip()
        if not _ISO_DATE.fullmatch(text):
            raise _bad("not a real date (YYYY-MM-DD)")
        try:
            value = date.fromisoformat(text)
        except ValueError:
            raise _bad("not a real date (YYYY-MM-DD)") from None
    if value > date.today():
        raise _bad("must not be in the future")
    if value < EARLIEST_BIRTH_DATE:
        raise _bad(f"must not be before {EARLIEST_BIRTH_DATE.isoformat()}")
    return value.isoformat()


def _scheme(value: object) -> str:
    """Schemes become parts of field paths and keys, so they must be plain identifiers."""
    if not isinstance(value, str) or not _SCHEME.fullmatch(value):
        raise _bad("has a scheme that is not a letter followed by up to 39 of A-Z a-z 0-9 _ . -")
    return value


def _locale(value: object) -> str | None:
    text = _text(value)
    if text is None:
        return None
    first, sep, rest = text.partition("-")
    locale = first.lower() + sep + rest
    if not text.isascii() or not _LOCALE.fullmatch(locale):
        raise _bad("not a BCP 47 language tag (like en-GB)")
    return locale


def _tag(value: object) -> str:
    text = _item(value)
    if not text.isascii() or not _TAG.fullmatch(text.lower()):
        raise _bad("not a tag (a-z 0-9 _ -, starting with a letter or digit, max 50)")
    return text.lower()


def _owner(value: object) -> str:
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _OWNER.fullmatch(text):
        raise _bad("not an owner id (A-Z a-z 0-9 _ . @ -, starting with a letter or digit)")
    return text


def _as_list(what: str, *, limit: int | None = None) -> BeforeValidator:
    """A lone string is a one-item list (a single email or tag) and an empty list is no value,
    like None. `limit` refuses oversized lists before checking their items one by one."""

    def coerce(value: object) -> object:
        if isinstance(value, str) and what == "strings":
            value = [value] if value.strip() else None
        if value is not None and not isinstance(value, list | tuple):
            raise _bad(f"must be a list of {what}")
        if value is not None and limit is not None and len(value) > limit:
            raise _bad(f"too many (max {limit})")
        return list(value or ()) or None

    return BeforeValidator(coerce)


def _as_address(value: object) -> object:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _bad("must be an object with address fields")
    return dict(value)


def _as_external_ids(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad("must be an object mapping scheme to id")
    return dict(value) or None


def _unique(
    limit: int, key: Callable[[str], str] = str, *, sort: bool = False
) -> Callable[[list[str] | None], list[str] | None]:
    """Duplicates are dropped, not refused (re-sending a known value is harmless), and the
    limit counts what is stored. Sets (tags) are sorted: one stored form per set."""

    def check(values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        seen: dict[str, str] = {}
        for item in values:
            seen.setdefault(key(item), item)
        if len(seen) > limit:
            raise _bad(f"too many (max {limit})")
        return sorted(seen.values()) if sort else list(seen.values())

    return check


_Text = Annotated[str | None, PlainValidator(_text)]
_Name = Annotated[str | None, PlainValidator(_name)]
_Email = Annotated[str, PlainValidator(_email)]
_Phone = Annotated[str, PlainValidator(_phone)]
_Tag = Annotated[str, PlainValidator(_tag)]
_Scheme = Annotated[str, PlainValidator(_scheme)]
_Item = Annotated[str, PlainValidator(_item)]
_Strings = _as_list("strings")
_SortedSet = AfterValidator(_unique(MAX_TAGS, sort=True))
_OptionalOwner = PlainValidator(lambda v: None if v is None or v == "" else _owner(v))


class _Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    street_number: _Text = None
    address_line1: _Text = None
    address_line2: _Text = None
    locality: _Text = None
    region: _Text = None
    postcode: _Text = None
    country: Annotated[str, PlainValidator(_country)]


class _Profile(BaseModel):
    """Every field optional and nullable: which ones are required, and what None means,
    differs between registration and change and is decided by the callers below."""

    model_config = ConfigDict(extra="forbid")

    given_name: _Name = None
    family_name: _Name = None
    emails: Annotated[
        list[_Email] | None, _Strings, AfterValidator(_unique(MAX_EMAILS, str.casefold))
    ] = None
    phones: Annotated[list[_Phone] | None, _Strings, AfterValidator(_unique(MAX_PHONES))] = None
    addresses: Annotated[
        list[Annotated[_Address, BeforeValidator(_as_address)]] | None,
        _as_list("addresses", limit=MAX_ADDRESSES),
    ] = None
    birth_date: Annotated[str | None, PlainValidator(_birth_date)] = None
    external_ids: Annotated[dict[_Scheme, _Item] | None, BeforeValidator(_as_external_ids)] = None
    locale: Annotated[str | None, PlainValidator(_locale)] = None
    tags: Annotated[list[_Tag] | None, _Strings, _SortedSet] = None
    owner: Annotated[str | None, _OptionalOwner] = None


_PYDANTIC_REASONS = {"extra_forbidden": "unknown field", "missing": "required"}


def _shown_key(key: object) -> str:
    """Keys are the caller's vocabulary, not data; still cut short, and hidden unless str."""
    return key[:40] if isinstance(key, str) else "<non-string key>"


def _path(loc: tuple[int | str, ...]) -> str:
    if loc and loc[0] == "external_ids":
        # A scheme that failed its own rule is not repeated: it may be a mistyped value.
        key = loc[1] if len(loc) == 2 else None
        return f"external_ids.{key}" if isinstance(key, str) and _SCHEME.fullmatch(key) else loc[0]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + _shown_key(part)
    return path


def _violations(error: ValidationError) -> list[FieldViolation]:
    """Only our own reasons are passed on; the few pydantic errors our validators leave
    possible (unknown key, missing country) get our words, anything else a neutral one."""
    violations = []
    for detail in error.errors(include_url=False, include_context=False, include_input=False):
        ours = detail["type"] == "profile"
        reason = detail["msg"] if ours else _PYDANTIC_REASONS.get(detail["type"], "invalid value")
        violations.append(FieldViolation(_path(detail["loc"]), reason))
    return violations


def _phone_region(addresses: object, default_region: str | None) -> str | None:
    """Phones most likely belong to the country the customer lives in; the caller's default
    is the fallback, and an unusable one counts as none rather than cause a wrong parse."""
    if isinstance(addresses, list | tuple) and addresses and isinstance(addresses[0], Mapping):
        with suppress(PydanticCustomError):  # a bad country is reported on the address
            return _country(addresses[0].get("country"))
    if isinstance(default_region, str) and default_region.upper() in phonenumbers.SUPPORTED_REGIONS:
        return default_region.upper()
    return None


def _validate(
    data: object, what: str, default_region: str | None, reserved: Mapping[str, str]
) -> tuple[dict[str, Any], list[FieldViolation]]:
    """Every field given (None where given empty) and every violation, so that each command
    can add its own rules and still report all problems in one round."""
    if not isinstance(data, Mapping):
        raise ValidationFailed([FieldViolation(what, "must be an object of field names")])
    violations: list[FieldViolation] = []
    fields: dict[str, object] = {}
    external: dict[str, str | None] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            violations.append(FieldViolation(_shown_key(key), "unknown field"))
        elif key in reserved:
            violations.append(FieldViolation(key, reserved[key]))
        elif not key.startswith(EXTERNAL_ID_PREFIX):
            fields[key] = value
        elif not _SCHEME.fullmatch(key.removeprefix(EXTERNAL_ID_PREFIX)):
            violations.append(FieldViolation(_shown_key(key), "not a valid external id scheme"))
        else:
            try:
                external[key] = _text(value)
            except PydanticCustomError as error:
                violations.append(FieldViolation(key, error.message()))
    region = _phone_region(fields.get("addresses"), default_region)
    try:
        model = _Profile.model_validate(fields, context={"region": region})
    except ValidationError as error:
        return {}, _violations(error) + violations
    dumped = model.model_dump()
    given = {name: dumped[name] for name in _Profile.model_fields if name in model.model_fields_set}
    return given | external, violations


NO_IDENTITY = "a customer needs a name, an email, a phone or an external id"
# What makes a customer someone: a name, or a contact or id that reaches one person (a
# shop's e-mail-only sign-up, a loyalty card scanned at the till). Duplicate detection finds
# such customers by that contact; a profile of only a birth date or an address is nobody.
IDENTIFYING_FIELDS: tuple[str, ...] = ("given_name", "family_name", "emails", "phones")


def validate_registration(
    data: Mapping[str, Any], *, default_region: str | None = None
) -> dict[str, Any]:
    """A new customer's profile: absent and empty fields are left out entirely, so the
    first event holds only what is known; a customer must be someone: named, or reachable
    by an email, a phone or an external id."""
    given, violations = _validate(data, "profile", default_region, {})
    # On the input: `given` is empty when any field failed; a bad identifying field is
    # reported already, so it is not reported twice as missing.
    bad = {v.field.split("[")[0].split(".")[0].split(":")[0] for v in violations}
    known = given if not violations else data  # validated values when they all passed
    if not bad & {*IDENTIFYING_FIELDS, "external_ids", "external_id"} and not _identifies(known):
        violations.append(FieldViolation("family_name", NO_IDENTITY))
    if violations:
        raise ValidationFailed(violations)
    return {name: value for name, value in given.items() if value is not None}


def _identifies(data: Mapping[str, Any]) -> bool:
    """Whether the input names the customer or gives a contact or id that reaches them."""
    if any(_name(data.get(name)) for name in ("given_name", "family_name")):
        return True
    if any(data.get(name) for name in ("emails", "phones", "external_ids")):
        return True
    return any(key.startswith(EXTERNAL_ID_PREFIX) and data[key] for key in data)


def validate_changes(
    data: Mapping[str, Any], *, default_region: str | None = None
) -> dict[str, Any]:
    """Only the fields being changed; None clears one. The owner is left out because a
    change of owner is its own, separately authorised and audited command."""
    reserved = {"owner": "changed with the assign-owner command"}
    given, violations = _validate(data, "changes", default_region, reserved)
    if not data:
        violations.append(FieldViolation("changes", "nothing to change"))
    if violations:
        raise ValidationFailed(violations)
    return given


def validate_owner(owner: object) -> str:
    """Owner ids show up in readable metadata and logs, so they must be plain identifiers
    (a user or team id), never free text that could carry personal data."""
    try:
        return _owner(owner)
    except PydanticCustomError as error:
        raise ValidationFailed([FieldViolation("owner", error.message())]) from None
