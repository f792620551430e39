"""The simulated vendor: documented shapes, realistic deterministic traffic, faults, CLI."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest
import requests
from click.testing import CliRunner

from etl.cli import cli
from etl.config import SourceConfig
from etl.runtime.simulated_apis import generate_archive
from etl.runtime.simulator import SimulatedVendor
from etl.store.archive_line import parse_line
from etl.vendors import get as vendor_kind
from etl.vendors.nected import simulated_body as nected_body
from etl.vendors.parse_api import ParseContext
from etl.vendors.wiresocket import simulated_body as wiresocket_body


def nected_invocations(at: datetime, seed: int = 0) -> int:
    return int(nected_body(at, seed)["data"]["invocations"])

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


def test_model_is_deterministic_per_seed() -> None:
    at = datetime(2026, 11, 4, 15, 0, tzinfo=UTC)
    assert wiresocket_body(at, 1) == wiresocket_body(at, 1)
    assert nected_invocations(at, 1) == nected_invocations(at, 1)
    assert nected_invocations(at, 1) != nected_invocations(at, 2)


def test_connections_follow_daily_and_weekly_cycles_and_cross_the_limit() -> None:
    def conn(at: datetime) -> int:
        return wiresocket_body(at, 0)["usage"]["connections"]["current"]

    weeks = [MONDAY + timedelta(minutes=15 * i) for i in range(4 * 7 * 96)]
    afternoons = [conn(t) for t in weeks if t.weekday() < 5 and 14 <= t.hour < 16]
    nights = [conn(t) for t in weeks if t.weekday() < 5 and 2 <= t.hour < 4]
    weekend_afternoons = [conn(t) for t in weeks if t.weekday() >= 5 and 14 <= t.hour < 16]
    assert mean(afternoons) > 2 * mean(nights)
    assert mean(weekend_afternoons) < mean(afternoons)
    over = [t for t in weeks if conn(t) > 100]
    assert over, "the plan limit is crossed now and then"
    assert len(over) < len(weeks) / 20, "...but not all the time"
    statuses = {wiresocket_body(t, 0)["usage"]["connections"]["status"] for t in weeks}
    assert statuses == {"healthy", "warning", "critical"}


def test_invocations_grow_through_the_month_and_reset_at_its_start() -> None:
    hours = [datetime(2026, 10, 25, tzinfo=UTC) + timedelta(hours=h) for h in range(24 * 14)]
    values = [nected_invocations(t) for t in hours]
    resets = [t for t, prev, cur in zip(hours[1:], values, values[1:], strict=False) if cur < prev]
    assert resets == [datetime(2026, 11, 1, tzinfo=UTC)]
    assert values[hours.index(resets[0]) - 1] > 80_000  # about a month of growth


def test_generated_archive_parses_and_matches_the_live_server() -> None:
    sources = [SourceConfig(name="ws", kind="wiresocket", interval_seconds=600,
                            base_url="http://x"),
               SourceConfig(name="rules", kind="nected", interval_seconds=3600,
                            base_url="http://x")]
    start = datetime(2026, 11, 2, tzinfo=UTC)
    lines = list(generate_archive(sources, start, start + timedelta(hours=2), seed=5))
    assert [line["source"] for line in lines] == ["ws", "rules"] + ["ws"] * 6 + ["rules"] + ["ws"] * 5
    by_name = {s.name: s for s in sources}
    observations = [parse_line(json.dumps(line), by_name) for line in lines]
    assert [o.observed_at for o in observations] == sorted(o.observed_at for o in observations)

    frozen = start + timedelta(hours=1)
    with SimulatedVendor(seed=5, clock=frozen.timestamp) as sim:
        live_ws = requests.get(sim.base_url + "/usage", timeout=5,
                               headers={"Authorization": f"Bearer {sim.token}"}).json()
        live_nected = requests.get(sim.base_url + "/dev/usage", timeout=5,
                                   headers={"Nected-API-Key": sim.api_key}).json()
    assert live_ws == lines[7]["body"]
    assert live_nected == lines[8]["body"] and lines[8]["observed_at"] == "2026-11-02T01:00:00Z"
    vendor_kind("wiresocket").parse(live_ws, ParseContext("ws"))


def test_query_token_is_accepted_like_the_vendor_but_recorded(simulator: SimulatedVendor) -> None:
    ok = requests.get(f"{simulator.base_url}/usage?token={simulator.token}", timeout=5)
    assert ok.status_code == 200
    assert simulator.records[-1].credential_in_query
    assert requests.get(f"{simulator.base_url}/nope", timeout=5).status_code == 404


def test_fault_for_a_number_of_requests_then_recovery(simulator: SimulatedVendor) -> None:
    simulator.set_fault("unavailable", times=2, retry_after="7")
    headers = {"Nected-API-Key": simulator.api_key}
    got = [requests.get(simulator.base_url + "/dev/usage", headers=headers, timeout=5)
           for _ in range(3)]
    assert [r.status_code for r in got] == [503, 503, 200]
    assert got[0].headers["Retry-After"] == "7"
    assert got[0].json()["code"] == "SERVICE_UNAVAILABLE"
    with pytest.raises(ValueError, match="unknown fault"):
        simulator.set_fault("meteor")


def test_simulate_command_serves_until_interrupted() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "simulate", "--port", str(port), "--token", "t0k3n-abc"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first
        r = requests.get(f"http://127.0.0.1:{port}/usage", timeout=5,
                         headers={"Authorization": "Bearer t0k3n-abc"})
        assert r.status_code == 200 and "usage" in r.json()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("fault", "status"), [("unauthorized", 401), ("rate_limit", 429),
                                               ("unavailable", 503), ("server_error", 500)])
def test_echo_credential_quotes_the_received_credential_in_error_bodies(
    simulator: SimulatedVendor, fault: str, status: int,
) -> None:
    simulator.echo_credential = True
    simulator.set_fault(fault, times=1)
    got = requests.get(simulator.base_url + "/dev/usage", timeout=5,
                       headers={"Nected-API-Key": simulator.api_key})
    assert got.status_code == status and simulator.api_key in got.text[:120]
    # A wrong credential's 401 quotes that one; a good answer quotes nothing.
    wrong = requests.get(simulator.base_url + "/usage", timeout=5,
                         headers={"Authorization": "Bearer wrong-one-123"})
    assert wrong.status_code == 401 and "wrong-one-123" in wrong.text
    ok = requests.get(simulator.base_url + "/usage", timeout=5,
                      headers={"Authorization": f"Bearer {simulator.token}"})
    assert ok.status_code == 200 and simulator.token not in ok.text


def test_simulate_command_serves_the_fault_retry_after_and_echo_it_is_given() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "simulate", "--port", str(port), "--token", "t0k3n-abc",
         "--fault", "unavailable", "--retry-after", "30", "--echo-credential"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        r = requests.get(f"http://127.0.0.1:{port}/usage", timeout=5,
                         headers={"Authorization": "Bearer t0k3n-abc"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "30"
        assert "t0k3n-abc" in r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_simulate_command_slow_delay_option() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "simulate", "--port", str(port), "--api-key", "k3y-abc",
         "--fault", "slow", "--delay", "0.6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        started = time.monotonic()
        r = requests.get(f"http://127.0.0.1:{port}/dev/usage", timeout=60,
                         headers={"Nected-API-Key": "k3y-abc"})
        # Held back at least the delay; no upper bound, which only a busy machine would test.
        assert r.status_code == 200 and time.monotonic() - started >= 0.6
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_simulate_help_documents_the_fault_options() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0
    for text in ("--retry-after SECONDS", "--delay SECONDS", "--echo-credential",
                 "usage-etl simulate --fault unavailable --retry-after 30"):
        assert text in result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_simulate_stops_on_a_signal_even_when_started_with_sigint_ignored(sig: int) -> None:
    # A background job of a non-interactive shell (`usage-etl simulate &` in a script, CI)
    # starts with SIGINT ignored; the command must still stop on Ctrl-C / kill -INT / -TERM.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "simulate", "--port", str(port), "--history-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the last line it prints once it serves
            if "press Ctrl-C" in line:
                break
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
