"""`canonical` takes the standard library's path for plain values: it must give exactly the
bytes of the `rfc8785` package, or refuse exactly where `rfc8785` refuses."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import canonical
from ledger.errors import InvalidEvent

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


def reference(value: Any) -> bytes | None:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        return None


@settings(max_examples=400, deadline=None)
@given(values)
def test_canonical_bytes_equal_the_rfc8785_package(value: Any) -> None:
    expected = reference(value)
    if expected is None:
        with pytest.raises(InvalidEvent):
            canonical(value)
    else:
        assert canonical(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"\ue000": 1, "\U0001f600": 2}, id="keys-that-sort-differently-in-utf16"),
        pytest.param('\x00\x1f\x7f\u2028\u2029"\\', id="escapes"),
        pytest.param(2**53 - 1, id="largest-safe-integer"),
        pytest.param(-(2**53) + 1, id="smallest-safe-integer"),
        pytest.param(1.5, id="a-float"),
    ],
)
def test_edge_values_match_the_rfc8785_package(value: Any) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value", [2**53, -(2**53), "\ud800"], ids=["2^53", "-2^53", "lone-surrogate"]
)
def test_values_rfc8785_refuses_are_refused(value: Any) -> None:
    with pytest.raises(InvalidEvent):
        canonical(value)
