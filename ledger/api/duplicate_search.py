"""FindDuplicates: the likely duplicates of a candidate record or of a stored customer.

Owner-limited callers (`sales`) search only among their own customers: the restriction
(`call.grant.owner_filter`) goes into the index query itself, so another owner's customer
is never scored, returned or counted. Asking about a stored customer needs the same reach
as reading it. Matches are masked for the caller like GetCustomer, and the personal fields
actually returned are recorded in the access log before the response leaves.
"""

from __future__ import annotations

import math
from uuid import UUID

from ledger.api import convert
from ledger.api.customer_access import CustomerAccess
from ledger.api.errors import ApiError, customer_field, renamed
from ledger.api.paging import decode_token, encode_token, page_size
from ledger.api.rpc import Call
from ledger.application import CustomerLedger
from ledger.domain.errors import ValidationFailed
from ledger.domain.profile import validate_changes
from ledger.projections.dedup import Match
from ledger.projections.wiring import duplicate_queries
from ledger.v1 import customer_service_pb2 as pb

METHOD = "FindDuplicates"
DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_MATCHES = 1000  # pages reach this far; beyond it a search is not a duplicate check


def _min_score(request: pb.FindDuplicatesRequest) -> float | None:
    value = request.min_score
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ApiError.invalid("min_score", "must be a score between 0 and 1")
    return value or None  # 0: the server's threshold


def _candidate_profile(
    request: pb.FindDuplicatesRequest, ledger: CustomerLedger
) -> dict[str, object]:
    profile = convert.registration_profile(request.candidate)
    profile.pop("owner", None)  # not compared; and a candidate is nobody's yet
    for ignored in ("locale", "tags"):
        profile.pop(ignored, None)
    if not profile:
        raise ApiError.invalid("candidate", "give at least one field to compare")
    try:
        return validate_changes(profile, default_region=ledger.settings.default_region)
    except ValidationFailed as error:
        raise renamed(error, lambda f: customer_field(f, "candidate")) from None


def _query_key(request: pb.FindDuplicatesRequest) -> str:
    """What a page token is bound to: the request without its paging fields."""
    query = pb.FindDuplicatesRequest()
    query.CopyFrom(request)
    query.ClearField("page_token")
    query.ClearField("page_size")
    return query.SerializeToString(deterministic=True).hex()


def find_duplicates(
    call: Call, request: pb.FindDuplicatesRequest, ledger: CustomerLedger
) -> pb.FindDuplicatesResponse:
    size = page_size(request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
    min_score = _min_score(request)
    target = request.WhichOneof("target")
    if target is None:
        raise ApiError.invalid("candidate", "set a candidate record or the name of a customer")
    query = _query_key(request)
    offset = decode_token(request.page_token, METHOD, query)
    limit = min(offset + size, MAX_MATCHES) + 1
    queries = duplicate_queries(ledger)
    owner = call.grant.owner_filter
    matches: list[Match]
    if target == "name":
        customer_id = convert.parse_name(request.name)
        CustomerAccess(ledger).load(call, customer_id)  # the caller must reach it
        matches = queries.candidates_of(customer_id, min_score, limit, owner=owner)
    else:
        profile = _candidate_profile(request, ledger)
        matches = queries.candidates(profile, min_score, limit, owner=owner)
    end = min(offset + size, MAX_MATCHES)
    response = pb.FindDuplicatesResponse()
    page = matches[offset:end]
    views = []
    for match in page:
        view = ledger.get(UUID(match.customer_id))
        call.grant.check_record(match.customer_id, view.owner)
        views.append(view)
    # Masked for the caller, and the page's reads recorded, before anything is sent.
    messages = CustomerAccess(ledger).respond_many(call, views)
    for match, message in zip(page, messages, strict=True):
        response.matches.add(
            customer=message,
            score=match.score,
            field_scores=[
                pb.FieldScore(field=line.field, score=line.similarity, method=line.level)
                for line in match.explanation
            ],
        )
    if len(matches) > end and end < MAX_MATCHES:
        response.next_page_token = encode_token(METHOD, query, end)
    return response
