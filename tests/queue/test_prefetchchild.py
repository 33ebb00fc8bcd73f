"""The prefetch process's program: each batch warmed and answered, a bad request answered
"!", the end of input waits for the batches sent, a gone server is no error."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from mxbackup.queue import prefetchchild
from mxbackup.queue.prefetchchild import COLD, FAILED, WARM, serve
from mxbackup.queue.rounds import FRAME


def frame(obj: Any) -> bytes:
    body = obj if isinstance(obj, bytes) else pickle.dumps(obj)
    return FRAME.pack(len(body)) + body


def test_each_batch_is_warmed_in_order_and_answered(tmp_path: Path, monkeypatch: Any) -> None:
    warmed: list[list[tuple[str, int]]] = []

    def warm(files: list[tuple[str, int]]) -> int:
        warmed.append(files)
        return len(files) - 1  # the first batch: none announced (all cached)

    monkeypatch.setattr(prefetchchild, "warm", warm)
    first, second = [(str(tmp_path / "a"), 5)], [(str(tmp_path / "b"), 7), ("/c", 9)]
    stdout = io.BytesIO()
    serve(io.BytesIO(frame(first) + frame(second)), stdout, threads=1)
    assert warmed == [first, second]
    assert stdout.getvalue() == WARM + COLD


def test_a_bad_request_and_a_failing_batch_are_answered_failed(monkeypatch: Any) -> None:
    def warm(files: list[tuple[str, int]]) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(prefetchchild, "warm", warm)
    stdout = io.BytesIO()
    serve(io.BytesIO(frame(b"not a pickle") + frame([("/m", 1)])), stdout, threads=1)
    assert stdout.getvalue() == FAILED + FAILED


def test_a_truncated_request_ends_the_input_quietly() -> None:
    stdout = io.BytesIO()
    serve(io.BytesIO(frame([("/m", 1)])[:-2]), stdout, threads=1)
    assert stdout.getvalue() == b""


def test_a_real_file_is_warmed_and_a_gone_server_is_no_error(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"m" * 100)

    class Gone(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    serve(io.BytesIO(frame([(str(f), 100)])), Gone(), threads=1)  # raises nothing
    assert f.read_bytes() == b"m" * 100  # read only
    assert os.access(f, os.R_OK)
