"""What a vendor's answer may do on the wire (issue 26): crawl through its headers or body,
label a body gzip that is not, or send a decompression bomb. Each try ends by its deadline,
each answer is sorted into the right outcome with the right figures, and memory stays flat."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from etl.cli import cli
from etl.collect.poll import Collector
from etl.store.models import CollectionAttempt
from etl.store.writer import record_polls_apart
from tests.factories import (
    REPO,
    LoopbackVendor,
    http_json_config,
    http_json_toml,
    json_answer,
)

BODY = {"used": 4.7, "plan": {"limit": 10}, "data": [{"model": "a", "n": 1}]}
TEXT = json.dumps(BODY).encode()
CRAWL_S = 0.2  # between two bytes of a crawling answer


def poll(vendor: LoopbackVendor, *, timeout: float = 5, interval: float = 60):  # type: ignore[no-untyped-def]
    source = http_json_config(vendor.url, timeout=timeout, interval=interval).sources[0]
    with Collector([source]) as collector:
        return collector.poll(source)


def crawl(handler: BaseHTTPRequestHandler, vendor: LoopbackVendor, data: bytes) -> None:
    for i in range(len(data)):
        if vendor.stopping.wait(CRAWL_S):
            return
        handler.wfile.write(data[i:i + 1])


@pytest.mark.parametrize(("encoding", "data"), [
    ("gzip", gzip.compress(TEXT, mtime=0)),
    ("x-gzip", gzip.compress(TEXT[:20], mtime=0) + gzip.compress(TEXT[20:], mtime=0)),  # two members
    ("deflate", zlib.compress(TEXT)),                                  # zlib-wrapped
    ("deflate", zlib.compress(TEXT)[2:-4]),                            # raw, as some send it
    ("identity", TEXT),
], ids=["gzip", "two-gzip-members", "deflate-zlib", "deflate-raw", "identity"])
def test_a_compressed_body_is_read_as_the_vendor_sent_it(
    loopback_vendor: LoopbackVendor, encoding: str, data: bytes,
) -> None:
    loopback_vendor.answer = json_answer(None, raw=data, headers={"Content-Encoding": encoding})
    result = poll(loopback_vendor)
    assert (result.outcome, result.error) == ("ok", None)
    assert [(s.metric, s.value) for s in result.observation.samples] == [
        ("used", 4.7), ("tokens:a", 1.0)]


@pytest.mark.parametrize(("encoding", "data", "error"), [
    ("gzip", TEXT, "response body: labelled Content-Encoding: gzip but not gzip data "
                   "(Error -3 while decompressing data: incorrect header check)"),
    ("deflate", b"\x78\x9c not deflate", "response body: labelled Content-Encoding: deflate but "
                                         "not deflate data (Error -3 while decompressing data: "
                                         "invalid stored block lengths)"),
    ("gzip", gzip.compress(TEXT, mtime=0)[:30], "response body: labelled Content-Encoding: gzip but not "
                                       "gzip data (the compressed data ends early)"),
    ("br", TEXT, "response body: Content-Encoding 'br' is not one usage-etl asked for "
                 "(gzip, deflate)"),
], ids=["gzip-plain-json", "deflate-garbage", "gzip-cut-short", "brotli"])
def test_a_body_that_is_not_what_its_label_says_is_an_invalid_response_saying_so(
    loopback_vendor: LoopbackVendor, encoding: str, data: bytes, error: str,
) -> None:
    loopback_vendor.answer = json_answer(None, raw=data, headers={"Content-Encoding": encoding})
    result = poll(loopback_vendor)
    assert (result.outcome, result.error, result.http_status) == ("invalid_response", error, 200)
    assert loopback_vendor.requests == 1  # a lie is not retried


def test_a_trickled_body_times_out_saying_how_many_bytes_had_come(
    loopback_vendor: LoopbackVendor,
) -> None:
    body = (b'{"used": 1, "pad": "' + b"x" * 236 + b'"}')[:258]
    assert len(body) == 258
    sent = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 258\r\n\r\n" + body[:40])
        sent.append(40)
        for i in range(40, 258):
            if loopback_vendor.stopping.wait(CRAWL_S):
                return
            handler.wfile.write(body[i:i + 1])
            sent.append(i + 1)

    loopback_vendor.answer = answer
    result = poll(loopback_vendor, timeout=4, interval=5)  # one try: all of a 4 s poll
    assert result.outcome == "timeout"
    prefix, _, rest = (result.error or "").partition(" of 258 bytes of the body in ")
    assert prefix.startswith("read timed out: ") and rest == "4.0 s", result.error
    came = int(prefix.removeprefix("read timed out: "))
    assert 40 <= came <= sent[-1]  # what had come, not "0 of 258"


def test_a_vendor_trickling_its_headers_is_cut_at_the_deadline_recorded_and_shown_by_status(
    engine: Engine, loopback_vendor: LoopbackVendor, tmp_path: Path,
) -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        crawl(handler, loopback_vendor, b"X-Slow: " + b"a" * 100_000)  # 5.5 hours of headers

    loopback_vendor.answer = answer
    config = http_json_config(loopback_vendor.url, timeout=4, interval=5)
    source = config.sources[0]
    with Collector([source]) as collector:
        result = collector.poll(source)
    record_polls_apart(engine, [result])
    # One try, all of a 4 s poll: the vendor's connection was shut, never read out.
    assert (result.outcome, result.error, result.tries) == (
        "timeout", "timed out: no complete answer (status and headers) in 4.0 s", 1)
    assert _hung_up(loopback_vendor)
    with engine.connect() as conn:
        row = conn.execute(select(CollectionAttempt.source, CollectionAttempt.outcome)).one()
    assert tuple(row) == ("acme", "timeout")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'database_url = "{engine.url.render_as_string(hide_password=False)}"\n'
                   + http_json_toml(loopback_vendor.url, timeout=4, interval=5))
    shown = CliRunner().invoke(cli, ["--config", str(cfg), "status", "--json"])
    assert shown.exit_code == 1, shown.output  # stale: never a success
    (status,) = json.loads(shown.stdout)["sources"]
    assert status["last_error"] == ("timeout: timed out: no complete answer (status and "
                                    "headers) in 4.0 s")


def _hung_up(vendor: LoopbackVendor) -> bool:
    """Whether the vendor saw the client hang up (its next write fails; waited for)."""
    ends = time.monotonic() + 60  # a hang guard, not the thing tested
    while not vendor.hangups and time.monotonic() < ends:
        time.sleep(0.05)
    return vendor.hangups == 1


BOMB_MIB = 200
MEASURE = """
import json, resource, sys
from etl.collect.poll import Collector
from tests.factories import http_json_config
source = http_json_config(sys.argv[1]).sources[0]
with Collector([source]) as collector:
    collector.poll(source)  # imports and sessions warmed up on a small body
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
    result = collector.poll(source)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps([result.outcome, result.error, (after - before) // 1024]))
"""


def test_a_gzip_bomb_is_refused_without_decompressing_it_into_memory(
    loopback_vendor: LoopbackVendor,
) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    bomb = b"".join(packer.compress(zeros) for _ in range(BOMB_MIB)) + packer.flush()
    assert len(bomb) < 300 * 1024  # 200 MiB once decoded
    loopback_vendor.answer = json_answer(BODY)
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, loopback_vendor.url], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "ready\n"
        loopback_vendor.answer = json_answer(None, raw=bomb, headers={"Content-Encoding": "gzip"})
        proc.stdin.write("go\n")
        proc.stdin.flush()
        outcome, error, grew_mib = json.loads(proc.stdout.readline())
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait(timeout=60)
    assert (outcome, error) == ("invalid_response", "response body larger than 1048576 bytes "
                                                    "once decoded (gzip)")
    assert grew_mib < 16, f"one poll of a gzip bomb took {grew_mib} MiB more"
