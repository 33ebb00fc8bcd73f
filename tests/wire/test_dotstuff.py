"""Dot-stuffing across chunk boundaries (pitfall 11 of twisted-mail-pitfalls.md)."""

from __future__ import annotations

from typing import Any

from fakeprimary import unstuff
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from wirecase import CHUNK, reference_stuffing

from mxbackup.wire.dotstuff import DotStuffer


def stuff_in_chunks(message: bytes, cuts: list[int]) -> bytes:
    stuffer = DotStuffer()
    bounds = [0, *sorted(cuts), len(message)]
    return b"".join(stuffer(message[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))


class DotStufferTests(SynchronousTestCase):
    def test_dot_line_exactly_at_chunk_boundary_is_stuffed(self) -> None:
        first = b"x" * (CHUNK - 2) + b"\r\n"
        assert len(first) == CHUNK
        stuffer = DotStuffer()
        self.assertEqual(stuffer(first), first)
        self.assertEqual(stuffer(b".\r\nnext\r\n"), b"..\r\nnext\r\n")
        # CR and LF of the line end split over two chunks
        stuffer = DotStuffer()
        self.assertEqual(stuffer(b"x" * (CHUNK - 1) + b"\r"), b"x" * (CHUNK - 1) + b"\r")
        self.assertEqual(stuffer(b"\n.hidden\r\n"), b"\n..hidden\r\n")
        self.assertTrue(stuffer.ends_with_crlf())

    def test_first_line_of_the_message_is_stuffed(self) -> None:
        self.assertEqual(DotStuffer()(b".\r\n"), b"..\r\n")

    def test_crlf_is_left_alone(self) -> None:
        stuffer = DotStuffer()
        self.assertEqual(stuffer(b"a\r\nb\r\n"), b"a\r\nb\r\n")
        self.assertTrue(stuffer.ends_with_crlf())

    def test_ends_with_crlf_tracks_the_last_octets(self) -> None:
        stuffer = DotStuffer()
        stuffer(b"abc\r")
        self.assertFalse(stuffer.ends_with_crlf())
        stuffer(b"\n")
        self.assertTrue(stuffer.ends_with_crlf())
        stuffer(b"x")
        self.assertFalse(stuffer.ends_with_crlf())

    @settings(max_examples=300, deadline=None)
    @given(
        lines=st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=3),
                st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
            ),
            max_size=30,
        ),
        data=st.data(),
    )
    def test_chunked_stuffing_equals_whole_message_stuffing(self, lines: Any, data: Any) -> None:
        message = b"".join(b"." * dots + text + b"\r\n" for dots, text in lines)
        cuts = data.draw(
            st.lists(st.integers(min_value=0, max_value=len(message)), max_size=12),
            label="cuts",
        )
        out = stuff_in_chunks(message, cuts)
        self.assertEqual(out, reference_stuffing(message))
        self.assertNotIn(b"\r\r\n", out)
        self.assertEqual(out.count(b"\r\n"), message.count(b"\r\n"))
        self.assertEqual(unstuff(out), message)
        self.assertNotIn(b"\r\n.\r\n", b"\r\n" + out)  # nothing in it can end DATA

    def test_end_of_data(self) -> None:
        stuffer = DotStuffer()
        self.assertEqual(stuffer.end_of_data(), b".\r\n")  # an empty message
        stuffer(b"no newline")
        self.assertEqual(stuffer.end_of_data(), b"\r\n.\r\n")
