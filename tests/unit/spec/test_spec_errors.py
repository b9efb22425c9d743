"""CNI error classes: wire shape, codes, and rebuilding a plugin's error document."""

from __future__ import annotations

import pytest

from cni.spec import errors as E


def test_every_class_has_a_distinct_code() -> None:
    assert E.BY_CODE[1] is E.IncompatibleVersion
    assert E.BY_CODE[4] is E.InvalidEnvironment
    assert E.BY_CODE[7] is E.InvalidConfig
    assert E.BY_CODE[11] is E.TryAgainLater
    assert E.BY_CODE[999] is E.InternalError
    classes = [c for c in vars(E).values() if isinstance(c, type) and issubclass(c, E.CNIError) and c is not E.CNIError]
    assert len({c.code for c in classes}) == len(classes)
    for code, cls in E.BY_CODE.items():
        assert cls.code == code
    assert set(E.BY_CODE.values()) == set(classes), "every error class must be reachable from its wire code"


def test_to_wire_shape_and_details_omitted_when_empty() -> None:
    assert E.InvalidConfig("bad").to_wire("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": "bad"}
    assert E.IOFailure("m", "d").to_wire("0.4.0") == {"cniVersion": "0.4.0", "code": 5, "msg": "m", "details": "d"}


def test_str_joins_details() -> None:
    assert str(E.NotFound("no such NAD", "namespace default")) == "no such NAD: namespace default"


def test_prefixed_keeps_class_and_code() -> None:
    err = E.CNIError("boom", "d", code=142).prefixed("plugin x: ")
    assert type(err) is E.CNIError and err.code == 142 and err.msg == "plugin x: boom" and err.details == "d"
    err2 = E.AddressExhausted("full").prefixed("net1: ")
    assert isinstance(err2, E.AddressExhausted) and err2.code == 101


@pytest.mark.parametrize(
    ("doc", "cls", "code"),
    [
        ({"code": 7, "msg": "m"}, E.InvalidConfig, 7),
        ({"code": 11, "msg": "m", "details": "later"}, E.TryAgainLater, 11),
        ({"code": 123, "msg": "plugin-specific"}, E.CNIError, 123),
        ({"msg": "no code"}, E.InternalError, 999),
        ({"code": "7", "msg": "string code"}, E.InternalError, 999),
        ({"code": True, "msg": "bool code"}, E.InternalError, 999),
        ({"code": 7.0, "msg": "float code"}, E.InternalError, 999),
    ],
)
def test_from_wire_keeps_the_plugins_code(doc: dict, cls: type, code: int) -> None:  # type: ignore[type-arg]
    err = E.from_wire(doc)
    assert type(err) is cls
    assert err.code == code
    assert err.msg == doc["msg"]


def test_from_wire_tolerates_missing_and_null_fields() -> None:
    err = E.from_wire({"code": 5, "details": None})
    assert (err.msg, err.details, err.code) == ("", "", 5)
    assert E.from_wire({"code": 5, "msg": "m", "details": "d"}).to_wire("1.0.0")["details"] == "d"
