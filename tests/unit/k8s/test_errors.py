"""The HTTP status → error mapping, pure: each answer becomes the class whose CNI code tells the caller what to do."""

from __future__ import annotations

import orjson
import pytest

from cni.k8s import errors as E


def _status(reason: str = "", message: str = "") -> bytes:
    return orjson.dumps({"kind": "Status", "reason": reason, "message": message})


@pytest.mark.parametrize(("status", "reason", "cls", "code"), [
    (404, "NotFound", E.ApiNotFound, 103),
    (409, "AlreadyExists", E.ApiAlreadyExists, 11),
    (409, "Conflict", E.ApiConflict, 11),
    (410, "Expired", E.ApiGone, 11),
    (401, "Unauthorized", E.ApiUnauthorized, 102),
    (403, "Forbidden", E.ApiUnauthorized, 102),
    (500, "InternalError", E.ApiUnavailable, 11),
    (429, "TooManyRequests", E.ApiUnavailable, 11),
    (422, "Invalid", E.ApiInvalid, 999),
    (400, "BadRequest", E.ApiInvalid, 999),
])
def test_each_status_maps_to_the_class_that_says_what_to_do(status: int, reason: str, cls: type[E.ApiError],
                                                            code: int) -> None:
    err = E.error_from_status(status, _status(reason, "the server's words"), "GET", "/api/v1/pods/p")
    assert type(err) is cls and err.code == code
    assert (err.status, err.reason, err.path) == (status, reason, "/api/v1/pods/p")
    assert err.msg.startswith("GET /api/v1/pods/p: ") and err.details == "the server's words"


def test_a_body_that_is_not_a_status_still_gives_an_error_with_its_text() -> None:
    err = E.error_from_status(502, b"<html>bad gateway</html>", "PUT", "/x")
    assert isinstance(err, E.ApiUnavailable) and err.details == "<html>bad gateway</html>"
    assert E.error_from_status(404, b"", "GET", "/x").details == "HTTP 404"
