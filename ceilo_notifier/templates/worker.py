"""A render worker: a process of its own that renders templates on request.

The service cannot stop a thread, and the sandbox bounds neither time nor
memory, so each render runs here: the service waits ``render_timeout`` for
the answer and kills the process past it; ``RLIMIT_AS`` caps the memory the
process may map, so a render that builds a huge string fails with
``MemoryError`` here and never grows the service.

The service starts it as ``python -m ceilo_notifier.templates.worker`` (a
new interpreter: nothing of the service's threads, locks or sockets comes
along) and talks to it over its stdin and stdout in frames: a 4-byte
big-endian length, then that many bytes. Bytes only both ways: the service
never unpickles what a worker sends.

* first the service sends the setup, JSON ``{"sources": {NAME: [SOURCE,
  "json"|"txt"]}, "max_size": BYTES, "memory": BYTES}``; the worker answers
  ``R`` once it is ready;
* then, for each render, JSON ``{"name": ..., "vars": {...}}``; the worker
  answers ``K`` + the rendered body, ``E`` + the cause (UTF-8), or ``X`` + the
  cause when it exits after answering (out of memory).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
from typing import Any

READY, OK, ERROR, EXITING = b"R", b"K", b"E", b"X"
HEADER = struct.Struct(">I")


class _Invalid(Exception):
    """The render finished, but its result cannot be sent."""


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


def _render(env, compiled: dict, sources: dict, name: str, variables: dict) -> bytes:
    template = compiled.get(name)
    if template is None:
        source, _kind = sources[name]
        template = compiled[name] = env.from_string(source)
    limit = env.max_size
    chunks, size = [], 0
    for chunk in template.generate(**variables):
        size += len(chunk)
        if size > limit:
            raise _Invalid(f"renders more than max_body_bytes ({limit} bytes)")
        chunks.append(chunk)
    text = "".join(chunks)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid(f"renders text that is not UTF-8 ({exc.reason})") from None
    if len(body) > limit:
        raise _Invalid(f"renders more than max_body_bytes ({limit} bytes)")
    if sources[name][1] == "json":
        try:
            json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise _Invalid(f"renders invalid JSON ({exc})") from None
    return body


def _describe(exc: BaseException) -> str:
    from jinja2 import sandbox

    if isinstance(exc, _Invalid):
        return str(exc)
    if isinstance(exc, sandbox.SecurityError):
        return f"refused by the sandbox: {exc}"
    text = str(exc)
    line = getattr(exc, "lineno", None)
    where = f" (line {line})" if line else ""
    return f"{type(exc).__name__}{where}: {text}" if text else type(exc).__name__


def read_frame(fd: int) -> bytes | None:
    """One frame from a blocking fd; None at its end."""
    header = _read(fd, HEADER.size)
    if header is None:
        return None
    return _read(fd, HEADER.unpack(header)[0])


def _read(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def serve(inp: int, out: int) -> None:
    """The worker's main loop, on two file descriptors."""
    setup = json.loads(read_frame(inp) or b"{}")
    from ceilo_notifier.templates import sandbox

    sources = {name: tuple(value) for name, value in setup["sources"].items()}
    env = sandbox.Environment(setup["max_size"])
    compiled: dict[str, Any] = {}
    memory = setup.get("memory") or 0
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    write_frame(out, READY)
    while True:
        request = read_frame(inp)
        if request is None:
            return  # the service is gone or closed us
        status = ERROR
        try:
            request = json.loads(request)
            answer = OK + _render(env, compiled, sources, request["name"], request["vars"])
        except MemoryError:
            status = EXITING
            answer = status + f"out of memory (a render worker may map {memory >> 20} MiB)".encode()
        except RecursionError:
            answer = status + b"recursion too deep"
        except BaseException as exc:  # noqa: BLE001 - a template may raise anything
            answer = status + _describe(exc).encode("utf-8", "backslashreplace")
        try:
            write_frame(out, answer)
        except OSError:
            return
        if status == EXITING:
            return


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the service decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    # Nothing else may write into the frames: stdout goes where stderr goes.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(inp, out)


if __name__ == "__main__":
    main()
