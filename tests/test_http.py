"""The HTTP layer against the simulated vendor over loopback: outcomes, retries, pacing."""

from __future__ import annotations

import json
import logging
import socket
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from etl.collect.http import MAX_RETRIES, HttpFailure, PacerRegistry, fetch_json, new_session
from etl.collect.poll import Collector
from etl.config import SourceConfig
from etl.redact import redact
from etl.runtime.simulator import SimulatedVendor
from etl.vendors import get as vendor_kind
from etl.vendors.types import PollRecord
from tests.factories import FakeClock, sim_source


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def poll(src: SourceConfig, **kwargs: object) -> PollRecord:
    with Collector([src], pacers=PacerRegistry(), **kwargs) as collector:  # type: ignore[arg-type]
        return collector.poll(src)


@pytest.mark.parametrize("kind", ["wiresocket", "nected"])
def test_ok_poll_parses_a_live_response(simulator: SimulatedVendor, kind: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = poll(sim_source(simulator, kind, monkeypatch))
    assert result.outcome == "ok", result.error
    assert result.http_status == 200 and result.tries == 1
    assert result.observation is not None
    assert {s.metric for s in result.observation.samples} == (
        {"connections", "documents"} if kind == "wiresocket" else {"invocations"}
    )
    # Never the documented ?token= form: the credential travels in a header only.
    assert [r.credential_in_query for r in simulator.records] == [False]


@pytest.mark.parametrize("kind", ["wiresocket", "nected"])
def test_wrong_credential_is_auth_error_and_not_retried(
    simulator: SimulatedVendor, kind: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "wrong-credential-0123456789"
    caplog.set_level(logging.DEBUG)
    sleeps = SleepRecorder()
    result = poll(sim_source(simulator, kind, monkeypatch, secret=wrong), sleep=sleeps)
    assert result.outcome == "auth_error"
    assert result.http_status == 401 and result.tries == 1
    assert simulator.request_count() == 1
    assert sleeps.calls == []
    assert wrong not in (result.error or "") and wrong not in caplog.text


def test_503_retry_after_seconds_is_honoured(simulator: SimulatedVendor,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("unavailable", times=1, retry_after="2")
    sleeps = SleepRecorder()
    result = poll(sim_source(simulator, "wiresocket", monkeypatch), sleep=sleeps)
    assert result.outcome == "ok" and result.tries == 2
    assert sleeps.calls == [2.0]
    assert simulator.request_count(status=503) == 1


def test_retry_after_http_date_is_honoured(simulator: SimulatedVendor,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The wait is the date less the wall clock when the 429 is read, which lies between
    # `before` and `after`: bounds that hold however slowly the poll runs.
    date = int(time.time()) + 30  # an HTTP date has whole seconds; well before the next poll
    simulator.set_fault("rate_limit", times=1, retry_after=formatdate(date, usegmt=True))
    sleeps = SleepRecorder()
    before = time.time()
    result = poll(sim_source(simulator, "nected", monkeypatch), sleep=sleeps)
    after = time.time()
    assert result.outcome == "ok" and result.tries == 2
    assert len(sleeps.calls) == 1 and date - after <= sleeps.calls[0] <= date - before


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_retry_after_zero_negative_or_garbage_falls_back_to_backoff(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    simulator.set_fault("unavailable", times=1, retry_after=value)
    sleeps = SleepRecorder()
    result = poll(sim_source(simulator, "wiresocket", monkeypatch), sleep=sleeps)
    assert result.outcome == "ok" and result.tries == 2
    assert len(sleeps.calls) == 1 and 0 <= sleeps.calls[0] <= 1


def test_retry_after_past_the_next_poll_gives_up_at_once(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.set_fault("rate_limit", retry_after="3600")
    sleeps = SleepRecorder()
    result = poll(sim_source(simulator, "wiresocket", monkeypatch, interval=60), sleep=sleeps)
    assert result.outcome == "rate_limited" and result.http_status == 429
    assert result.retry_after == 3600 and result.tries == 1
    assert sleeps.calls == []


def test_a_retry_after_we_cap_is_reported_as_the_vendor_sent_it_and_as_capped(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.set_fault("rate_limit", retry_after="86400")  # a day; we wait at most 6 h
    result = poll(sim_source(simulator, "wiresocket", monkeypatch, interval=60),
                  sleep=SleepRecorder())
    assert result.outcome == "rate_limited" and result.retry_after == 21600
    assert result.error is not None
    assert result.error.endswith("(Retry-After 86400 s from the vendor, capped at 21600 s)")
    simulator.set_fault("rate_limit", retry_after="600")  # under the cap: no note
    result = poll(sim_source(simulator, "wiresocket", monkeypatch, interval=60),
                  sleep=SleepRecorder())
    assert result.retry_after == 600 and result.error is not None
    assert "capped" not in result.error


def test_persistent_500_is_retried_a_bounded_number_of_times(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.set_fault("server_error")
    sleeps = SleepRecorder()
    result = poll(sim_source(simulator, "nected", monkeypatch), sleep=sleeps)
    assert result.outcome == "http_error" and result.http_status == 500
    assert result.tries == MAX_RETRIES + 1 == simulator.request_count()
    # Exponential backoff: the waits grow.
    assert len(sleeps.calls) == MAX_RETRIES and sleeps.calls[-1] > sleeps.calls[0]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("malformed", "wiresocket"), ("oversize", "wiresocket"), ("error_code", "nected")],
)
def test_bad_bodies_are_invalid_response_and_not_retried(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch, fault: str, kind: str
) -> None:
    simulator.set_fault(fault)
    result = poll(sim_source(simulator, kind, monkeypatch), sleep=SleepRecorder())
    assert result.outcome == "invalid_response", result.error
    assert result.tries == 1 and simulator.request_count() == 1


def test_slow_vendor_is_a_timeout(simulator: SimulatedVendor,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("slow", delay=3)
    result = poll(sim_source(simulator, "nected", monkeypatch, timeout=0.3), sleep=SleepRecorder())
    assert result.outcome == "timeout"
    assert result.tries == MAX_RETRIES + 1


def test_nothing_listening_is_a_connection_error(simulator: SimulatedVendor,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = sim_source(simulator, "wiresocket", monkeypatch, base_url=f"http://127.0.0.1:{port}")
    result = poll(src, sleep=SleepRecorder())
    assert result.outcome == "connection_error"
    assert result.tries == MAX_RETRIES + 1


def test_simulator_enforces_12_per_minute_on_wiresocket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client that ignores the limit (pacing off) gets a 429 on its 13th request. The
    # simulator's clock stands still, so the 13 requests fall in one minute however slow.
    clock = FakeClock()
    unpaced = PacerRegistry()
    results = []
    with SimulatedVendor(tokens=("unpaced-token-abcdef",), clock=clock.time) as sim:
        src = sim_source(sim, "wiresocket", monkeypatch)
        with Collector([src], pacers=unpaced, sleep=SleepRecorder()) as collector:
            for _ in range(13):
                unpaced._pacers.clear()  # a fresh, empty window each time: no pacing at all
                results.append(collector.poll(src))
    assert [r.outcome for r in results[:12]] == ["ok"] * 12
    assert results[12].outcome == "rate_limited" and results[12].http_status == 429
    assert results[12].retry_after is not None and results[12].retry_after > 0


def test_pacing_keeps_one_credential_at_12_per_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    with SimulatedVendor(tokens=("shared-token-abcdef",), clock=clock.time) as sim:
        # Three sources on one credential, each every 5 s: 36 polls a minute wanted.
        sources = [sim_source(sim, "wiresocket", monkeypatch, name=f"ws-{i}", interval=5)
                   for i in range(3)]
        outcomes = []
        with Collector(sources, pacers=PacerRegistry(clock=clock.time), clock=clock.time,
                       sleep=clock.sleep) as collector:
            for _ in range(60):  # five simulated minutes
                for src in sources:
                    outcomes.append(collector.poll(src).outcome)
                clock.sleep(5)
        sent = sorted(r.at for r in sim.records)
    assert sim.request_count(status=429) == 0
    assert set(outcomes) == {"ok", "rate_limited"}
    assert len(sent) >= 12 * 4
    for i, at in enumerate(sent):
        in_window = [t for t in sent[i:] if t < at + 60]
        assert len(in_window) <= 12


ECHOED_FAULTS = [("unauthorized", 401), ("rate_limit", 429), ("unavailable", 503),
                 ("server_error", 500)]


@pytest.mark.parametrize(("fault", "status"), ECHOED_FAULTS)
@pytest.mark.parametrize("kind", ["wiresocket", "nected"])
def test_credential_echoed_in_an_error_body_is_masked_in_logs_and_errors(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, fault: str, status: int, kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    simulator.echo_credential = True
    # Twice, so that the retriable ones also log their retry line with the body in it.
    simulator.set_fault(fault, times=2, retry_after="1")
    result = poll(sim_source(simulator, kind, monkeypatch), sleep=SleepRecorder())
    secret = simulator.token if kind == "wiresocket" else simulator.api_key
    assert simulator.request_count(status=status) >= 1
    texts = [caplog.text, result.error or ""]
    if status == 401:
        assert result.outcome == "auth_error" and "***" in (result.error or "")
    else:
        assert result.outcome == "ok" and "retry 1" in caplog.text and "***" in caplog.text
    assert not any(secret in text for text in texts)


def test_a_long_credential_cut_by_the_snippet_leaves_no_part_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # The error message keeps 200 characters of the body; this credential straddles them.
    token = "long-" + "0123456789abcdef" * 20
    caplog.set_level(logging.DEBUG)
    with SimulatedVendor(tokens=(token,), echo_credential=True) as sim:
        sim.set_fault("unavailable", retry_after="3600")
        result = poll(sim_source(sim, "wiresocket", monkeypatch), sleep=SleepRecorder())
    assert result.outcome == "http_error" and result.http_status == 503
    assert "***" in (result.error or "")
    assert token[5:25] not in (result.error or "") and token[5:25] not in caplog.text


def test_redaction_uses_the_credential_actually_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # The credential file is rotated between polls: the new value, read at the poll and sent,
    # is what gets masked (the daemon's log formatter only knows the values read at start).
    old, new = "rotated-old-token-1234", "rotated-new-token-5678"
    secret_file = tmp_path / "ws-token"
    secret_file.write_text(old + "\n")
    caplog.set_level(logging.DEBUG)
    with SimulatedVendor(tokens=(old, new), echo_credential=True) as sim:
        src = SourceConfig(name="ws", kind="wiresocket", interval_seconds=60,
                           base_url=sim.base_url, secret_file=str(secret_file))
        with Collector([src], pacers=PacerRegistry(), sleep=SleepRecorder()) as collector:
            assert collector.poll(src).outcome == "ok"
            secret_file.write_text(new + "\n")
            sim.set_fault("unavailable", times=1, retry_after="1")
            retried = collector.poll(src)
            sim.set_fault("server_error")
            failed = collector.poll(src)
        # fetch_json on its own, told nothing but the headers it sends.
        with pytest.raises(HttpFailure) as caught:
            fetch_json(new_session(), src.url, {"Authorization": f"Bearer {new}"}, timeout=5,
                       deadline=time.monotonic() + 10, sleep=SleepRecorder())
    assert retried.outcome == "ok" and retried.tries == 2
    assert failed.outcome == "http_error" and failed.http_status == 500
    assert "***" in str(caught.value) and new not in str(caught.value)
    assert "retry 1" in caplog.text
    for text in (caplog.text, failed.error or ""):
        assert new not in text and old not in text


def test_redaction_masks_json_and_url_escaped_forms() -> None:
    secret = 'p/a"ss word+1é'
    echoed = (f'{{"a": {json.dumps(secret)}, "b": {json.dumps(secret, ensure_ascii=False)}, '
              f'"c": "{quote(secret, safe="")}", "d": "{quote_plus(secret)}"}}')
    clean = redact(echoed, [secret])
    assert clean.count("***") == 4
    assert "ss word" not in clean and "ss%20word" not in clean and "ss+word" not in clean
    # Under 4 characters nothing is masked (see MIN_SECRET_LENGTH).
    assert redact("HTTP 500 abc", ["abc", "500"]) == "HTTP 500 abc"


def test_a_pacer_stop_after_a_real_try_keeps_its_status_and_tries(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 11 of the 12 slots used; the 12th try gets a 503, and its retry finds no slot.
    # A clock that moves only when slept on: the retry's slot (61 s after the first send)
    # stays past the next poll (60 s) however long the reservations take.
    clock = FakeClock()
    src = sim_source(simulator, "wiresocket", monkeypatch)
    registry = PacerRegistry(clock=clock.time)
    pacer = registry.get("wiresocket", simulator.token, vendor_kind("wiresocket").rate_limit)
    assert all(pacer.reserve(0.0) == 0.0 for _ in range(11))
    simulator.set_fault("unavailable", times=1, retry_after="1")
    with Collector([src], pacers=registry, clock=clock.time, sleep=clock.sleep) as collector:
        result = collector.poll(src)
    assert (result.outcome, result.http_status, result.tries) == ("http_error", 503, 1)
    assert result.retry_after == 1 and result.latency_ms is not None
    assert (result.error or "").startswith("HTTP 503: ")
    assert "then no request slot before the next poll" in (result.error or "")
    assert simulator.request_count() == 1
