"""The DATA stream reader, on its own: end of data, dot-stuffing, limits, bare CR/LF."""

from __future__ import annotations

from mxbackup.inbound.datastream import DataReader


def test_long_line_scan_is_linear():
    """A body of 998-octet lines is scanned in linear time (the regex anchors at line starts)."""
    import time

    block = (b"z" * 998 + b"\r\n") * 2000  # 2 MB
    reader = DataReader(lambda b: None, 10**9, 50)
    reader.feed(b"Subject: x\r\n\r\n")
    start = time.process_time()
    reader.feed(block)
    # Quadratic scanning took ~0.6 s here; linear takes a few ms.  Generous bound, CPU time.
    assert time.process_time() - start < 0.2
    assert reader.error is None
