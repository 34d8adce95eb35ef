from __future__ import annotations

import pytest

from backends.text import StopMatcher, Utf8Stream


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello", " wor", "ld", "!"], ("world",), ("Hello ", True)),
        (["ab", "c", "d"], ("cd",), ("ab", True)),
        (["a", "b", "c"], ("xyz",), ("abc", False)),
        (["x", "<", "/", "s", ">", "y"], ("</s>",), ("x", True)),
        (["<", "a"], ("<b>",), ("<a", False)),  # held back, then released
        (["one two"], ("two", "one"), ("", True)),  # earliest stop wins
        (["aaab"], ("aab",), ("a", True)),
    ],
)
def test_stop_matcher(
    pieces: list[str], stops: tuple[str, ...], expected: tuple[str, bool]
) -> None:
    assert feed_all(StopMatcher(stops), pieces) == expected


def test_stop_matcher_holds_back_only_possible_prefixes() -> None:
    matcher = StopMatcher(("END",))
    assert matcher.feed("abcE") == ("abc", False)
    assert matcher.feed("x") == ("Ex", False)


def test_utf8_stream_joins_split_characters() -> None:
    data = "héllo ✓".encode()
    stream = Utf8Stream()
    out = "".join(stream.feed(data[i : i + 1]) for i in range(len(data))) + stream.flush()
    assert out == "héllo ✓"
    assert stream.feed(b"\xe2\x9c") == ""
