"""The HTTP layer against the simulated vendor over loopback: outcomes, retries, pacing."""

from __future__ import annotations

import logging
import socket
import threading
import time
from email.utils import formatdate

import pytest

from etl.collect import Collector, PollResult
from etl.config import SourceConfig
from etl.http import MAX_RETRIES, PacerRegistry
from etl.simulator import SimulatedVendor


class FakeClock:
    """A clock that only moves when someone sleeps on it (shared by pacer and simulator)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.lock = threading.Lock()

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def source(sim: SimulatedVendor, kind: str, monkeypatch: pytest.MonkeyPatch, *,
           name: str | None = None, secret: str | None = None, interval: float = 60,
           timeout: float = 5, base_url: str | None = None) -> SourceConfig:
    env = f"TEST_SECRET_{kind.upper()}_{name or 'x'}".replace("-", "_")
    monkeypatch.setenv(env, secret or (sim.token if kind == "wiresocket" else sim.api_key))
    return SourceConfig(name=name or kind, kind=kind, interval_seconds=interval,
                        base_url=base_url or sim.base_url, secret_env=env,
                        timeout_seconds=timeout)


def poll(src: SourceConfig, **kwargs: object) -> PollResult:
    with Collector([src], pacers=PacerRegistry(), **kwargs) as collector:  # type: ignore[arg-type]
        return collector.poll(src)


@pytest.mark.parametrize("kind", ["wiresocket", "nected"])
def test_ok_poll_parses_a_live_response(simulator: SimulatedVendor, kind: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = poll(source(simulator, kind, monkeypatch))
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
    result = poll(source(simulator, kind, monkeypatch, secret=wrong), sleep=sleeps)
    assert result.outcome == "auth_error"
    assert result.http_status == 401 and result.tries == 1
    assert simulator.request_count() == 1
    assert sleeps.calls == []
    assert wrong not in (result.error or "") and wrong not in caplog.text


def test_503_retry_after_seconds_is_honoured(simulator: SimulatedVendor,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("unavailable", times=1, retry_after="2")
    sleeps = SleepRecorder()
    result = poll(source(simulator, "wiresocket", monkeypatch), sleep=sleeps)
    assert result.outcome == "ok" and result.tries == 2
    assert sleeps.calls == [2.0]
    assert simulator.request_count(status=503) == 1


def test_retry_after_http_date_is_honoured(simulator: SimulatedVendor,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("rate_limit", times=1, retry_after=formatdate(time.time() + 5, usegmt=True))
    sleeps = SleepRecorder()
    result = poll(source(simulator, "nected", monkeypatch), sleep=sleeps)
    assert result.outcome == "ok" and result.tries == 2
    assert len(sleeps.calls) == 1 and 3 <= sleeps.calls[0] <= 5


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_retry_after_zero_negative_or_garbage_falls_back_to_backoff(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    simulator.set_fault("unavailable", times=1, retry_after=value)
    sleeps = SleepRecorder()
    result = poll(source(simulator, "wiresocket", monkeypatch), sleep=sleeps)
    assert result.outcome == "ok" and result.tries == 2
    assert len(sleeps.calls) == 1 and 0 <= sleeps.calls[0] <= 1


def test_retry_after_past_the_next_poll_gives_up_at_once(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.set_fault("rate_limit", retry_after="3600")
    sleeps = SleepRecorder()
    result = poll(source(simulator, "wiresocket", monkeypatch, interval=60), sleep=sleeps)
    assert result.outcome == "rate_limited" and result.http_status == 429
    assert result.retry_after == 3600 and result.tries == 1
    assert sleeps.calls == []


def test_persistent_500_is_retried_a_bounded_number_of_times(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.set_fault("server_error")
    sleeps = SleepRecorder()
    result = poll(source(simulator, "nected", monkeypatch), sleep=sleeps)
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
    result = poll(source(simulator, kind, monkeypatch), sleep=SleepRecorder())
    assert result.outcome == "invalid_response", result.error
    assert result.tries == 1 and simulator.request_count() == 1


def test_slow_vendor_is_a_timeout(simulator: SimulatedVendor,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    simulator.set_fault("slow", delay=3)
    result = poll(source(simulator, "nected", monkeypatch, timeout=0.3), sleep=SleepRecorder())
    assert result.outcome == "timeout"
    assert result.tries == MAX_RETRIES + 1


def test_nothing_listening_is_a_connection_error(simulator: SimulatedVendor,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = source(simulator, "wiresocket", monkeypatch, base_url=f"http://127.0.0.1:{port}")
    result = poll(src, sleep=SleepRecorder())
    assert result.outcome == "connection_error"
    assert result.tries == MAX_RETRIES + 1


def test_simulator_enforces_12_per_minute_on_wiresocket(
    simulator: SimulatedVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that ignores the limit (pacing off) gets a 429 on its 13th request.
    src = source(simulator, "wiresocket", monkeypatch)
    unpaced = PacerRegistry()
    results = []
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
        sources = [source(sim, "wiresocket", monkeypatch, name=f"ws-{i}", interval=5)
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
