"""The OpenAPI 3.1 document: FastAPI's generated paths, completed with what the routes cannot say.

The routes read their JSON bodies themselves (:func:`engine.api.support.json_body`), so the exact
error codes of the contract (400 bad_request for a non-JSON body, 422 validation_failed with
``{field, message}`` errors) stay as they are; and they check their query parameters in the
engine, so REST and the Python API refuse the same input with the same messages. FastAPI sees
neither, so this module describes them in one table, :data:`OPERATIONS`: each operation's request
body (a pydantic model's JSON schema), its success answer, the error envelope on every 4xx and 5xx
with the codes it may carry, bearer auth, and the limits of the query parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from engine.api import schemas as s
from engine.api.support import MAX_INT, MAX_PAGE
from engine.domain import models as m
from engine.service.cursors import MAX_CURSOR_LENGTH

REF = "#/components/schemas/{model}"
BEARER = "bearerAuth"

ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The body is not JSON, or has the wrong content type."),
    401: ("unauthorized", "Missing, unknown or revoked API key."),
    402: ("plan_limit_reached", "The workspace's monthly limit is used up."),
    404: ("*_not_found", "Unknown id, or another workspace's (campaign_not_found, contact_not_found, "
                         "sender_not_found, list_not_found, webhook_not_found, not_found)."),
    409: ("conflict", "invalid_state (details: {status, action}), contact_exists, sender_in_use, "
                      "idempotency_conflict, approval_required or last_api_key."),
    413: ("payload_too_large", "The body is over the configured limit (10 MiB by default)."),
    422: ("validation_failed", "validation_failed (details: {errors: [{field, message}]}; unknown fields and "
                               "out-of-range numbers are errors), campaign_invalid (details: {problems}) or "
                               "no_pending_enrollments."),
    429: ("rate_limited", "Too many requests for this API key."),
    500: ("internal_error", "An unexpected failure; details carry the request_id (also in X-Request-Id)."),
}


@dataclass(frozen=True)
class Operation:
    """What one route takes and answers, beyond what FastAPI infers from its signature."""

    response: Any = None  # a model, list[model], or None for "no typed JSON answer"
    body: Any = None  # request body model (or list[model]); None when the route reads no body
    body_required: bool = True
    errors: tuple[int, ...] = ()  # beyond the ones every /v1 route may answer
    csv: bool = False  # also accepts text/csv


_LIFECYCLE = Operation(s.Campaign, errors=(404, 409))
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("get", "/v1/account"): Operation(s.Account),
    ("get", "/v1/forecast"): Operation(s.Forecast),
    ("get", "/v1/api_keys"): Operation(list[s.ApiKey]),
    ("post", "/v1/api_keys"): Operation(s.ApiKeyCreated, s.ApiKeyIn),
    ("delete", "/v1/api_keys/{key_id}"): Operation(s.Revoked, errors=(404, 409)),
    # senders
    ("post", "/v1/senders"): Operation(s.Sender, m.SenderIn),
    ("get", "/v1/senders"): Operation(s.SenderPage),
    ("get", "/v1/senders/{sender_id}"): Operation(s.Sender, errors=(404,)),
    ("patch", "/v1/senders/{sender_id}"): Operation(s.Sender, m.SenderPatch, errors=(404, 409)),
    ("delete", "/v1/senders/{sender_id}"): Operation(s.Deleted, errors=(404, 409)),
    ("post", "/v1/senders/{sender_id}/reenable"): Operation(s.Sender, errors=(404, 409)),
    ("post", "/v1/senders/{sender_id}/check"): Operation(s.SenderCheck, errors=(404,)),
    ("post", "/v1/senders/{sender_id}/dkim"): Operation(s.Sender, s.DkimKeyIn, body_required=False, errors=(404,)),
    ("get", "/v1/senders/{sender_id}/dns"): Operation(s.SenderDns, errors=(404,)),
    # contacts, lists, suppressions
    ("post", "/v1/contacts"): Operation(s.Contact, m.ContactIn, errors=(409,)),
    ("post", "/v1/contacts/import"): Operation(s.ImportResult, list[m.ContactIn], csv=True,
                                               errors=(404,)),  # an unknown list_id
    ("get", "/v1/contacts"): Operation(s.ContactPage, errors=(404,)),  # an unknown list_id
    ("get", "/v1/contacts/{contact_id}"): Operation(s.Contact, errors=(404,)),
    ("patch", "/v1/contacts/{contact_id}"): Operation(s.Contact, m.ContactPatch, errors=(404, 409)),
    ("delete", "/v1/contacts/{contact_id}"): Operation(s.Deleted, errors=(404,)),
    ("post", "/v1/lists"): Operation(s.ContactList, m.ListIn),
    ("get", "/v1/lists"): Operation(s.ListPage),
    ("post", "/v1/lists/{list_id}/contacts"): Operation(s.ListMembersChanged, m.ContactIdsIn, errors=(404,)),
    ("delete", "/v1/lists/{list_id}/contacts"): Operation(s.ListMembersChanged, m.ContactIdsIn, errors=(404,)),
    ("get", "/v1/suppressions"): Operation(s.SuppressionPage),
    ("post", "/v1/suppressions"): Operation(s.Suppression, m.SuppressionIn),
    ("delete", "/v1/suppressions/{value}"): Operation(s.SuppressionDeleted, errors=(404,)),
    # webhooks, events
    ("post", "/v1/webhooks"): Operation(s.Webhook, m.WebhookIn),
    ("get", "/v1/webhooks"): Operation(s.WebhookPage),
    ("delete", "/v1/webhooks/{webhook_id}"): Operation(s.Deleted, errors=(404,)),
    ("get", "/v1/events"): Operation(s.EventPage),
    # campaigns
    ("post", "/v1/campaigns"): Operation(s.Campaign, m.CampaignIn),
    ("get", "/v1/campaigns"): Operation(s.CampaignPage),
    ("post", "/v1/campaigns/bulk_delete"): Operation(s.BulkDeleted, s.BulkDeleteIn),
    ("get", "/v1/campaigns/{campaign_id}"): Operation(s.Campaign, errors=(404,)),
    ("patch", "/v1/campaigns/{campaign_id}"): Operation(s.Campaign, m.CampaignPatch, errors=(404, 409)),
    ("put", "/v1/campaigns/{campaign_id}/schedule"): Operation(s.Campaign, m.ScheduleIn, errors=(404, 409)),
    ("delete", "/v1/campaigns/{campaign_id}"): Operation(s.Deleted, errors=(404,)),
    ("post", "/v1/campaigns/{campaign_id}/copy"): Operation(s.Campaign, errors=(404,)),
    ("post", "/v1/campaigns/{campaign_id}/approve"): _LIFECYCLE,
    ("post", "/v1/campaigns/{campaign_id}/launch"): Operation(s.Campaign, errors=(402, 404, 409)),
    ("post", "/v1/campaigns/{campaign_id}/pause"): _LIFECYCLE,
    ("post", "/v1/campaigns/{campaign_id}/resume"): _LIFECYCLE,
    ("post", "/v1/campaigns/{campaign_id}/cancel"): _LIFECYCLE,
    ("post", "/v1/campaigns/{campaign_id}/archive"): _LIFECYCLE,
    ("post", "/v1/campaigns/{campaign_id}/complete"): _LIFECYCLE,
    ("get", "/v1/campaigns/{campaign_id}/stats"): Operation(s.CampaignStats, errors=(404,)),
    ("post", "/v1/campaigns/{campaign_id}/enrollments"): Operation(s.EnrollResult, m.EnrollIn, errors=(404, 409)),
    ("get", "/v1/campaigns/{campaign_id}/enrollments"): Operation(s.EnrollmentPage, errors=(404,)),
    ("delete", "/v1/campaigns/{campaign_id}/enrollments"): Operation(s.Removed, m.ContactIdsIn, errors=(404,)),
    ("post", "/v1/campaigns/{campaign_id}/dispatch"): Operation(s.Dispatched, s.DispatchIn, body_required=False,
                                                                 errors=(402, 404, 409)),
    ("post", "/v1/campaigns/{campaign_id}/test_send"): Operation(s.TestSendResult, s.TestSendIn,
                                                                  errors=(402, 404, 409)),
    ("get", "/v1/campaigns/{campaign_id}/preview"): Operation(s.Preview, errors=(404,)),
    ("get", "/v1/campaigns/{campaign_id}/forecast"): Operation(s.Forecast, errors=(404,)),
    # reports
    ("get", "/v1/campaigns/{campaign_id}/stats/steps"): Operation(list[s.StepStats], errors=(404,)),
    ("get", "/v1/campaigns/{campaign_id}/stats/links"): Operation(list[s.LinkStats], errors=(404,)),
    ("get", "/v1/campaigns/{campaign_id}/stats/timeline"): Operation(list[s.TimelineBucket], errors=(404,)),
    ("get", "/v1/campaigns/{campaign_id}/activity"): Operation(s.ActivityPage, errors=(404,)),
    ("get", "/v1/campaigns/{campaign_id}/skips"): Operation(list[s.Skip], errors=(404,)),
    ("get", "/v1/campaigns/{campaign_id}/replies"): Operation(list[s.Reply], errors=(404,)),
}

_INTEGER = {"type": "integer"}
_COUNT = {"type": "integer", "minimum": 1, "maximum": MAX_INT}
PARAMETERS: dict[str, dict[str, Any]] = {
    "page": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    "days": {"type": "integer", "minimum": 1, "maximum": 90, "default": 7},
    "sort": {"type": "string", "enum": ["created_at", "updated_at", "name", "status"], "default": "created_at"},
    "order": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
    "interval": {"type": "string", "enum": ["hour", "day", "week"], "default": "day"},
    "after": {"type": "integer", "minimum": 0, "maximum": MAX_INT, "default": 0},
    "cursor": {"type": "string", "maxLength": MAX_CURSOR_LENGTH, "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
               "description": "A `pagination.next_cursor` this listing answered: the next page, by an index seek "
                              "whatever its depth. Not with `page` (or `after`); the same filters as the call that "
                              "made it, else 422 validation_failed naming `cursor`."},
    "step": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
    "batch_number": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
}
"""Limits the engine enforces on query parameters, by name (the same name means the same rule)."""
FORECAST_PARAMETERS: dict[str, dict[str, Any]] = {  # the what-if changes (engine/service/forecast.py)
    "daily_limit": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
    "max_per_hour": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
    "every_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
    "senders_add": {"type": "integer", "minimum": 0, "maximum": 100},
    "as_if": {"type": "string", "enum": ["launched"]},
}
LIMITS: dict[str, int] = {"/v1/events": 1000}
"""``limit`` maxima by path; the reports' default is 500."""


def _schema_of(annotation: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a model or ``list[model]``, its definitions moved to ``definitions``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        _, found = models_json_schema([(annotation, "validation")], ref_template=REF)
        definitions.update(found.get("$defs", {}))
        return {"$ref": REF.format(model=annotation.__name__)}
    schema = TypeAdapter(annotation).json_schema(ref_template=REF)
    definitions.update(schema.pop("$defs", {}))
    return schema


_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# A crontab field as this document promises it: *, */step, or a list of values in the field's range
# (the engine also takes ranges such as 1-5, which apscheduler validates).
_CRON_FIELDS = [r"[0-5]?[0-9]", r"[01]?[0-9]|2[0-3]", r"[1-9]|[12][0-9]|3[01]", r"[1-9]|1[0-2]", r"[0-6]"]
_CRON = "^" + " ".join(rf"(\*(/[1-9])?|({field})(,({field}))*)" for field in _CRON_FIELDS) + "$"
_JSON_OBJECT_OF_STRINGS = r'^\{("[A-Za-z0-9 _-]{1,40}": ?"[a-z_]{1,20}")?\}$'
FIELD_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("SenderIn", "email"): {"format": "email"},
    ("SenderPatch", "email"): {"format": "email"},
    ("ContactIn", "email"): {"format": "email"},
    ("ContactPatch", "email"): {"format": "email"},
    ("SuppressionIn", "email"): {"format": "email"},
    ("SuppressionIn", "domain"): {"pattern": r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"},
    ("TestSendIn", "emails"): {"items": {"type": "string", "format": "email"}},
    ("ContactIn", "timezone"): {"$ref": REF.format(model="Timezone")},
    ("ContactPatch", "timezone"): {"$ref": REF.format(model="Timezone")},
    ("ScheduleIn", "timezone"): {"$ref": REF.format(model="Timezone")},
    ("ScheduleIn", "days"): {"type": "array", "minItems": 1, "items": {"type": "string", "enum": _DAYS}},
    ("ScheduleIn", "start_time"): {"pattern": _HHMM},
    ("ScheduleIn", "end_time"): {"pattern": r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"},
    ("ScheduleIn", "cron"): {"pattern": _CRON, "description": "5-field crontab (minute hour day month weekday)."},
    ("ScheduleIn", "skip_dates"): {"items": {"type": "string", "format": "date"}},
    ("ScheduleIn", "holidays"): {"$ref": REF.format(model="HolidayCalendar")},
    ("WebhookIn", "url"): {"pattern": r"^https?://[^\s/]+"},
}
"""What the engine checks in code (validators the JSON schema of a pydantic model cannot show),
said in the schema, by (component, field); applied to the non-null branch of an optional field."""
NOT_NULL: set[tuple[str, str]] = {("CampaignPatch", "name")}
"""Optional fields that, when given, must not be null."""
MODEL_RULES: dict[str, dict[str, Any]] = {
    # exactly one of email or domain
    "SuppressionIn": {"oneOf": [{"required": ["email"], "properties": {"email": {"type": "string"}}},
                                {"required": ["domain"], "properties": {"domain": {"type": "string"}}}]},
    # at least one way to choose contacts
    "EnrollIn": {"anyOf": [{"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                           for name in ("contact_ids", "list_ids", "filter")]},
    # a winner rule picks among variants: it needs them
    "StepIn": {"if": {"required": ["winner"], "properties": {"winner": {"type": "object"}}},
               "then": {"required": ["variants"], "properties": {"variants": {"type": "array"}}}},
}
"""Rules that tie fields of one body together."""


def _timezones() -> dict[str, Any]:
    from zoneinfo import available_timezones

    return {"type": "string", "enum": sorted(available_timezones()),
            "description": "An IANA time zone name (the server's tz database)."}


def _holiday_calendars() -> dict[str, Any]:
    from holidays import list_supported_countries

    supported = list_supported_countries()  # what engine/schedule/closed_days.py accepts
    names = sorted({*supported, *(f"{country}-{subdivision}" for country, subdivisions in supported.items()
                                  for subdivision in subdivisions)})
    return {"type": "string", "enum": names,
            "description": "A country (FR) or country-subdivision (US-CA) whose public holidays close the "
                           "schedule; any letter case is accepted."}


def _say_the_truth(schemas: dict[str, Any]) -> None:
    """Write :data:`FIELD_RULES`, :data:`NOT_NULL` and :data:`MODEL_RULES` into the components."""
    schemas["Timezone"] = _timezones()
    schemas["HolidayCalendar"] = _holiday_calendars()
    hooked = schemas.get("WebhookIn", {}).get("properties", {}).get("events")
    if hooked is not None:  # what create_webhook accepts: the catalog's types, or "*" for all
        from events.registry import all_types

        hooked["items"] = {"type": "string", "enum": ["*", *sorted(all_types())]}
    for (model, field), rule in FIELD_RULES.items():
        properties = schemas.get(model, {}).get("properties", {})
        if field not in properties:
            continue
        found = properties[field]
        branches = found.get("anyOf")
        target = next(b for b in branches if b.get("type") != "null") if branches else found
        if "$ref" in rule:
            target.clear()
        target.update(rule)
    for model, field in NOT_NULL:
        found = schemas.get(model, {}).get("properties", {}).get(field)
        if found and "anyOf" in found:
            kept = next(b for b in found.pop("anyOf") if b.get("type") != "null")
            found.pop("default", None)
            found.update(kept)
    for model, rule in MODEL_RULES.items():
        if model in schemas:
            schemas[model].update(rule)


def _error_response(status: int) -> dict[str, Any]:
    """A reference to the shared response of that status (defined once in components.responses)."""
    return {"$ref": f"#/components/responses/Error{status}"}


def _error_responses() -> dict[str, Any]:
    out = {}
    for status, (code, text) in ERROR_CODES.items():
        out[f"Error{status}"] = {"description": f"{code}: {text}", "content": {"application/json": {
            "schema": {"$ref": REF.format(model="ErrorEnvelope")}}}}
    return out


def _describe_parameters(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "query":
            continue
        name = parameter["name"]
        if path.endswith("/forecast") and name in FORECAST_PARAMETERS:
            parameter["schema"] = dict(FORECAST_PARAMETERS[name])
        elif name == "mapping":
            parameter["schema"] = {"type": "string", "pattern": _JSON_OBJECT_OF_STRINGS,
                                   "description": 'JSON object {"header": "field"}.'}
        elif name == "limit":
            parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": LIMITS.get(path, 500)}
        elif name in PARAMETERS:
            parameter["schema"] = dict(PARAMETERS[name])
        elif parameter.get("schema", {}).get("anyOf") == [_INTEGER, {"type": "null"}] or \
                parameter.get("schema", {}).get("type") == "integer":
            parameter["schema"] = dict(_COUNT)


def _complete_operation(path: str, method: str, operation: dict[str, Any], definitions: dict[str, Any]) -> None:
    spec = OPERATIONS.get((method, path), Operation())
    responses: dict[str, Any] = operation.setdefault("responses", {})
    success = next((code for code in responses if code.startswith("2")), "200")
    if spec.response is not None:
        responses[success] = {"description": responses.get(success, {}).get("description", "Success"),
                              "content": {"application/json": {"schema": _schema_of(spec.response, definitions)}}}
    if spec.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": _schema_of(spec.body, definitions)}}
        if spec.csv:
            content["text/csv"] = {"schema": {"type": "string"},
                                   "example": "email,first_name,company\nbob@example.com,Bob,Example Ltd\n"}
            content["multipart/form-data"] = {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "contentMediaType": "text/csv",
                                        "description": "The CSV: any of , ; tab | as delimiter, headers in any "
                                                       "case or spacing (First Name, E-mail, Company Name)."},
                               "mapping": {"type": "string", "pattern": _JSON_OBJECT_OF_STRINGS,
                                           "description": 'JSON object {"header": "field"}; overrides the '
                                                          "query parameter."}}}}
        operation["requestBody"] = {"required": spec.body_required, "content": content}
    errors = {401, 422, 429, 500, *spec.errors}
    if spec.body is not None:
        errors |= {400, 413}
    if any(parameter.get("in") == "path" for parameter in operation.get("parameters", [])):
        errors.add(404)
    for status in sorted(errors):
        responses[str(status)] = _error_response(status)
    operation["security"] = [{BEARER: []}]
    _describe_parameters(path, operation)


def _complete_public_operation(path: str, operation: dict[str, Any]) -> None:
    """The routes without an API key: tracking, unsubscribe and operations."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    responses["500"] = _error_response(500)
    if path == "/t/o/{token}":
        responses["200"] = {"description": "A 1x1 transparent GIF, whatever the token.",
                            "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}}}
    elif path == "/t/c/{token}":
        responses.pop("200", None)
        responses["302"] = {"description": "Redirect to the link that was in the email.",
                            "headers": {"Location": {"schema": {"type": "string"}}}}
        responses["404"] = _error_response(404)
    elif path.startswith("/u/"):
        page = {"content": {"text/html": {"schema": {"type": "string"}}}}
        responses["200"] = {"description": "A small HTML page (confirm, or done).", **page}
        responses["404"] = {"description": "The token is not valid: an HTML page saying so.", **page}
    elif path == "/healthz":
        responses["200"] = {"description": "The process runs.",
                            "content": {"application/json": {"schema": {"$ref": REF.format(model="Health")}}}}
    elif path == "/readyz":
        readiness = {"application/json": {"schema": {"$ref": REF.format(model="Readiness")}}}
        responses["200"] = {"description": "Ready.", "content": readiness}
        responses["503"] = {"description": "Not ready: the fields above plus the error envelope (code not_ready).",
                            "content": readiness}
    elif path == "/metrics":
        responses["200"] = {"description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The full document, built once and cached on the app (as FastAPI's own ``openapi()`` does)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                           description=app.description, routes=app.routes, tags=app.openapi_tags,
                           servers=app.servers)
    definitions: dict[str, Any] = {}
    for model in (s.ErrorEnvelope, s.Health, s.Readiness):
        _schema_of(model, definitions)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                _complete_operation(path, method, operation, definitions)
            else:
                _complete_public_operation(path, operation)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which this API never answers
        schemas.pop(unused, None)
    schemas.update(definitions)
    _say_the_truth(schemas)
    components["responses"] = _error_responses()
    components["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer",
                                              "description": "Authorization: Bearer <api_key>; a key sees "
                                                             "only its own workspace."}}
    app.openapi_schema = document
    return document
