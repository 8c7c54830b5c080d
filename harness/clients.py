"""HTTP clients that misbehave on purpose, over raw sockets: uploads that trickle in, readers that stop."""

from __future__ import annotations

import select
import socket
import time

import httpx


def multipart(audio: bytes, **fields: str) -> tuple[bytes, bytes]:
    """The head and body of a raw multipart transcription request."""
    request = httpx.Request("POST", "http://x/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                            data={"model": "whisper-1", **fields})
    body = request.read()
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {request.headers['content-type']}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head, body


def connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    """A connection to 127.0.0.1:`port`; a small `receive_buffer` makes a client that stops reading stall
    the server sooner."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket, timeout: float = 15) -> tuple[bytes, bool]:
    """Everything until the server closes the connection; whether it was reset rather than closed."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data.extend(chunk)
    except ConnectionResetError:
        return bytes(data), True
    return bytes(data), False


def trickle(port: int, head: bytes, body: bytes, every_s: float = 0.3, give_up_s: float = 30) -> tuple[bytes, float]:
    """Sends the head and a little of the body, then a byte every `every_s` until the server answers;
    returns the answer (read until the server closes) and the seconds it took to come."""
    sock = connect(port)
    try:
        sock.sendall(head + body[:200])
        started, sent = time.monotonic(), 200
        while time.monotonic() - started < give_up_s:
            if select.select([sock], [], [], every_s)[0]:
                break
            try:
                sock.sendall(body[sent:sent + 1])
            except OSError:
                break  # the server closed the connection
            sent += 1
        elapsed = time.monotonic() - started
        answer, _ = read_all(sock)
        return answer, elapsed
    finally:
        sock.close()


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP/1.1 answer (0 if there is none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
