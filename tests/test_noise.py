"""Interference detection, re-takes, the machine-speed canary and intervals over rounds (docs/noise.md).

Detection is tested against a real busy neighbour: CPU-bound subprocesses started and stopped
by the test, one more than there are cores, so every core is oversubscribed.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from harness.canary import (
    CANARY_KIND,
    SweepCanary,
    canary_key,
    history_text,
    normalise_history,
    normalise_pair,
    run_canary_text,
)
from harness.errors import UserError
from harness.interference import (
    CPU_WINDOW_NS,
    ENV,
    CpuWindow,
    Probe,
    SampleEvidence,
    available_cpus,
    contended_labels,
    cpu_windows,
    is_contended,
    merge_rounds,
    verdict_of,
)
from harness.protocol import Measurement, Protocol, get_protocol, measure
from harness.rounds import plan_rounds, pool_round
from harness.stats import (
    SINGLE_ROUND_HALF_WIDTH,
    hierarchical_median_ci,
    summarize,
    summarize_rounds,
)
from harness.store import MeasurementKey, Store

HOG = (
    "import sys, time\nprint('spinning', flush=True)\n"
    "end = time.time() + 60\nwhile time.time() < end:\n    pass\n"
)


@contextmanager
def hogs(n: int | None = None) -> Iterator[None]:
    """``n`` (default: cores + 1) busy-looping processes, killed on exit (and after 60 s anyway)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.PIPE, text=True)
        for _ in range(n or available_cpus() + 1)
    ]
    try:
        for p in procs:  # each is spinning (a cold interpreter start can take over a second)
            assert p.stdout is not None and p.stdout.readline().strip() == "spinning"
        time.sleep(0.1)  # let them reach the run queue
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def work() -> None:
    """A few ms of CPU-bound pure-Python work (one thread)."""
    sum(i * i for i in range(40_000))


FAST = Protocol(
    "t", warmup_runs=2, warmup_min_s=0.0, min_runs=8, min_time_s=0.0, max_time_s=20.0, threads=1
)


# -- detection --------------------------------------------------------------------------------


LINUX = sys.platform.startswith("linux")


@pytest.mark.skipif(not LINUX, reason="run-queue wait (schedstat) is a Linux signal")
def test_a_busy_neighbour_makes_samples_contended():
    with hogs():
        m = measure(work, FAST)
    ev = m.interference
    assert ev is not None and ev["version"] == 1
    assert {"cpu", "runwait"} <= set(
        ev["signals"]
    )  # Linux exposes both (runqueue: not in every container)
    assert m.verdict == "contended" and m.contended
    assert ev["n_contended"] >= ev["n_taken"] // 2
    s = ev["samples"]
    assert len(s["wall_ms"]) == len(s["cpu_ms"]) == len(s["contended"]) == ev["n_taken"]
    # the evidence itself: we waited for a core for a good share of the wall time. Summed, not
    # per sample: a few-ms sample is shorter than a time slice, so the scheduler books a whole
    # wait to one sample and none to its neighbours (per-sample shares read 0, 0, 2.5, 0, ...)
    assert sum(s["wait_ms"]) / sum(s["wall_ms"]) > 0.1


def tiny_work() -> None:
    """About 50 us of pure-Python work: far shorter than a scheduler tick."""
    sum(i * i for i in range(600))


PULSE = (
    "import time\nprint('spinning', flush=True)\nend = time.time() + 60\n"
    "while time.time() < end:\n    t = time.time() + 0.02\n    while time.time() < t:\n        pass\n"
    "    time.sleep(0.03)\n"
)


@pytest.mark.skipif(not LINUX, reason="run-queue wait (schedstat) is a Linux signal")
def test_short_samples_next_to_a_contended_one_are_contended_too():
    from harness.protocol import NEAR_NS

    # neighbours that run 20 ms and sleep 30 ms: contended stretches with clean gaps between
    procs = [
        subprocess.Popen([sys.executable, "-c", PULSE], stdout=subprocess.PIPE, text=True)
        for _ in range(available_cpus() + 1)
    ]
    try:
        for p in procs:
            p.stdout.readline()
        proto = Protocol(
            "t",
            warmup_runs=5,
            warmup_min_s=0.0,
            min_runs=1500,
            min_time_s=0.0,
            max_time_s=20.0,
            threads=1,
        )
        m = measure(tiny_work, proto)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    ev = m.interference
    assert ev is not None and ev["n_contended"] > 0
    # the samples flagged by a signal taint their short neighbours (within NEAR_NS = 10 ms)
    assert NEAR_NS == 10_000_000 and ev["reasons"].get("near", 0) > 0
    assert sum(ev["samples"]["contended"]) == ev["n_contended"] >= ev["reasons"]["near"]


def test_contended_samples_are_retaken_up_to_the_limit():
    proto = Protocol(
        "t",
        warmup_runs=1,
        warmup_min_s=0.0,
        min_runs=4,
        min_time_s=0.0,
        max_time_s=20.0,
        threads=1,
        retakes=6,
    )
    with hogs():
        m = measure(work, proto)
    ev = m.interference
    assert ev is not None
    if m.verdict == "contended":  # clean samples could not be had: the retakes were spent
        assert ev["n_taken"] >= proto.retakes + 1
        assert ev["n_taken"] <= proto.min_runs + proto.retakes + 1
        assert len(m.samples_ms) == ev["n_taken"]  # all kept, flagged
    else:  # enough clean samples between the hog's time slices: stats over the clean ones only
        assert len(m.samples_ms) == proto.min_runs and ev["n_taken"] == proto.min_runs + len(
            m.dropped_ms
        )


@pytest.mark.skipif(
    not LINUX or "runqueue" not in Probe(1).signals, reason="needs the run-queue signal"
)
def test_quiet_wait_is_bounded_and_says_so(capfd):
    proto = Protocol(
        "t",
        warmup_runs=1,
        warmup_min_s=0.0,
        min_runs=3,
        min_time_s=0.0,
        max_time_s=20.0,
        threads=1,
        quiet_wait_s=0.6,
    )
    with hogs():
        t0 = time.perf_counter()
        m = measure(work, proto)
        took = time.perf_counter() - t0
    err = capfd.readouterr().err
    assert "waiting up to 0.6 s for it to quieten" in err and "still busy" in err
    assert m.interference is not None and 0.6 <= m.interference["waited_s"] < 3.0
    assert took < 15


def test_no_signal_means_unknown_not_clean(monkeypatch):
    monkeypatch.setenv(ENV, "off")
    m = measure(work, FAST)
    assert m.verdict == "unknown" and not m.contended
    assert m.interference is not None and m.interference["signals"] == []
    assert len(m.samples_ms) == FAST.min_runs


def test_the_rules_on_evidence():
    p = Probe(2, margin=0.10, signals=("cpu", "runwait", "runqueue", "steal"))
    # 2 threads busy: cpu = 2 x wall is clean; losing 30% of one thread's time is not
    assert (
        p.reasons(
            SampleEvidence(
                wall_ms=10, cpu_ms=20, wait_ms=0.1, steal_ms=0, others_start=0, others_end=0
            ),
            2.0,
        )
        == []
    )
    assert "cpu" in p.reasons(SampleEvidence(wall_ms=100, cpu_ms=140), 2.0)
    # a sample shorter than the CPU window is not judged by the CPU rule alone
    assert p.reasons(SampleEvidence(wall_ms=10, cpu_ms=14), 2.0) == []
    assert "cpu" in p.reasons(SampleEvidence(wall_ms=10, cpu_ms=14), 2.0, cpu_rule=True)
    # a workload that only keeps 1.5 threads busy undisturbed is not flagged for that
    assert p.reasons(SampleEvidence(wall_ms=100, cpu_ms=150), 1.5) == []
    # a step that mostly waits (sleep, a device) has no CPU rule
    assert p.reasons(SampleEvidence(wall_ms=100, cpu_ms=1), 0.01) == []
    assert p.reasons(SampleEvidence(wall_ms=10, wait_ms=2.0), None) == ["runwait"]
    assert p.reasons(SampleEvidence(wall_ms=10, steal_ms=2.0), None) == ["steal"]
    if p.ncpu >= 1:
        free = p.free_cores(2.0)
        assert p.reasons(
            SampleEvidence(wall_ms=10, others_start=free + 1, others_end=free + 1), 2.0
        ) == ["runqueue"]
        # one snapshot over is not a persistent neighbour
        assert (
            p.reasons(SampleEvidence(wall_ms=10, others_start=free + 1, others_end=free), 2.0) == []
        )


def test_short_samples_meet_the_cpu_rule_in_windows():
    """Linux credits other threads' CPU time at their ticks: over one 1-ms sample of a 2-thread
    step cpu/wall jumps between about 1 and 4.9 on an idle machine. Judged one by one, every
    such sample was 'contended' (used threads = p90 = 4.9, capped at 2). In 50-ms windows the
    ticks average out: the quiet step is clean, a descheduled stretch is still caught."""
    p = Probe(2, margin=0.10, signals=("cpu",))
    lumpy = [SampleEvidence(wall_ms=1.0, cpu_ms=c) for c in [1.05] * 7 + [8.0]] * 25
    assert p.used_threads(lumpy) == pytest.approx(1.98, abs=0.01)  # p90 of 4 windows, not 8.0
    assert CPU_WINDOW_NS == 50_000_000
    assert [round(c / w, 2) for w, c in cpu_windows(lumpy)] == [1.88, 1.88, 1.88, 2.02]
    w = CpuWindow()
    done = [w.add(p, i, e, 2.0) for i, e in enumerate(lumpy)]
    judged = [d for d in done if d is not None]
    assert len(judged) == 4 and not any(bad for _, bad in judged)
    assert judged[0][0] == list(range(50))  # the window's sample indices
    # one thread off-CPU for the whole window: cpu/wall 1.0 of 2 threads
    w = CpuWindow()
    busy = [w.add(p, i, SampleEvidence(wall_ms=1.0, cpu_ms=1.0), 2.0) for i in range(50)]
    assert busy[-1] == (list(range(50)), True) and busy[:-1] == [None] * 49
    # long samples are judged on their own and never enter a window
    assert w.add(p, 0, SampleEvidence(wall_ms=60.0, cpu_ms=60.0), 2.0) is None
    # a last window that never filled joins the one before it
    tail = lumpy[:50] + lumpy[:10]
    assert len(cpu_windows(tail)) == 1 and cpu_windows(tail)[0][0] == pytest.approx(60.0)


def test_a_quiet_millisecond_step_is_not_called_contended():
    """A 2-thread step of about a millisecond on this machine (the tiny-LLM prefills of the
    quick grid were all 'contended' on an idle machine before the CPU windows)."""
    import torch

    lin = torch.nn.Linear(256, 256)
    x = torch.randn(64, 256)

    def step():
        with torch.inference_mode():
            y = x
            for _ in range(20):
                y = lin(y)

    proto = Protocol("t", warmup_runs=5, min_runs=200, min_time_s=0.3, retakes=10**6, threads=2)
    m = measure(step, proto)
    reasons = m.interference["reasons"]
    # whatever the neighbours do, the CPU rule must not flag most of a quiet step's samples
    assert reasons.get("cpu", 0) < 0.3 * m.interference["n_taken"], reasons


# -- bad input --------------------------------------------------------------------------------


def test_bad_settings_are_refused():
    with pytest.raises(UserError, match="retakes must be >= 0"):
        Protocol("t", retakes=-1)
    with pytest.raises(UserError, match="quiet_wait_s must be in"):
        Protocol("t", quiet_wait_s=120.0, max_time_s=60.0)
    with pytest.raises(UserError, match="rounds must be >= 1"):
        get_protocol("quick", rounds=0)
    with pytest.raises(UserError, match="contention_margin"):
        get_protocol("quick", contention_margin="1.5")
    # a minimum measuring time the maximum cuts short cannot be satisfied
    with pytest.raises(UserError, match=r"min_time_s \(10\) must not exceed max_time_s \(5\)"):
        Protocol("t", min_time_s=10.0, max_time_s=5.0)
    with pytest.raises(UserError, match="must not exceed max_time_s"):
        get_protocol("standard", min_time_s="9", max_time_s="3")
    # left at the preset's value, it is an "at most", like the quiet wait
    short = get_protocol("rigorous", max_time_s="3")
    assert short.min_time_s == 3.0 and get_protocol("rigorous").min_time_s == 5.0


@pytest.mark.parametrize(
    "override, words",
    [
        ("protocol.retakes=-1", "retakes must be >= 0"),
        ("protocol.quiet_wait_s=100", "quiet_wait_s must be in [0, max_time_s=5]"),
        ("protocol.min_time_s=50", "min_time_s (50) must not exceed max_time_s (5)"),
        ("run_to_run=maybe", "run_to_run must be auto, off or a standard deviation"),
    ],
)
def test_cli_bad_protocol_is_one_line_exit_2(tmp_path, override, words):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "sweep",
            "--config-name",
            "quick",
            "backend=fake",
            "report=false",
            override,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr


# -- intervals over rounds --------------------------------------------------------------------


def test_interval_over_rounds_covers_round_to_round_shifts():
    rng = np.random.default_rng(1)
    # three processes whose levels differ by ~8% while each is tight (0.5%)
    rounds = [rng.normal(level, 0.005 * level, 12) for level in (100.0, 108.0, 103.0)]
    naive = summarize(np.concatenate(rounds))
    lo, hi = hierarchical_median_ci(rounds)
    assert hi - lo > 1.5 * (naive.ci_high_ms - naive.ci_low_ms)
    # a fourth process at one of the seen levels falls inside the round-level interval
    s = summarize_rounds(rounds)
    assert s.ci_low_ms <= 101.0 and s.ci_high_ms >= 106.0 and not s.noisy
    # round medians spreading by more than 10% mark the measurement noisy
    assert summarize_rounds([rounds[0], rounds[1] * 1.05]).noisy
    assert s.n == 36 and s.median_ms == pytest.approx(naive.median_ms)


def test_one_round_is_honestly_wide():
    x = np.random.default_rng(0).normal(100.0, 0.2, 10)
    s = summarize_rounds([x])
    assert s.ci_low_ms <= 100.0 * (1 - SINGLE_ROUND_HALF_WIDTH) + 0.5
    assert s.ci_high_ms >= 100.0 * (1 + SINGLE_ROUND_HALF_WIDTH) - 0.5


def test_protocol_rounds_split_the_budget():
    std = get_protocol("standard")
    n, per = plan_rounds(std, 1)
    assert (
        n == std.rounds == 3
        and per.min_runs == 4
        and per.retakes == 4
        and per.min_time_s == pytest.approx(std.min_time_s / 3)
        and per.quiet_wait_s == pytest.approx(std.quiet_wait_s / 3) == 5.0
    )
    n, per = plan_rounds(std, 7)  # the sweep asks for more rounds: each gets the full budget
    assert n == 7 and per == std


def _m(samples, verdict):
    return Measurement(
        samples_ms=list(samples),
        stats=summarize(samples),
        protocol="quick",
        threads=1,
        interference={
            "version": 1,
            "verdict": verdict,
            "n_taken": len(samples),
            "n_contended": 0,
            "retaken": 0,
            "waited_s": 0.0,
            "reasons": {},
        },
    )


def _pool(rounds: list[tuple[list[float], str]]) -> tuple[Measurement, dict]:
    prev = None
    for rnd, (samples, verdict) in enumerate(rounds):
        m, e = pool_round(_m(samples, verdict), {"k": 1}, prev, rnd)
        prev = {"status": "ok", "samples_ms": m.samples_ms, "extra": e}
    return m, e


def test_pool_round_keeps_round_sizes_and_the_worst_verdict():
    m0, e0 = _pool([([10.0, 10.1, 10.2], "clean")])
    assert e0["rounds"] == 1 and e0["round_sizes"] == [3] and verdict_of(e0) == "clean"
    # the first round contended, the second too: every round counts, the verdict is contended
    m1, e1 = _pool([([10.0, 10.1, 10.2], "contended"), ([11.0, 11.2], "contended")])
    assert e1["rounds"] == 2 and e1["round_sizes"] == [3, 2] and m1.stats.n == 5
    assert verdict_of(e1) == "contended" and e1["interference"]["rounds"] == ["contended"] * 2
    assert "dropped_rounds" not in e1
    # one contended round of three, two clean: it is dropped from the statistics
    m2, e2 = _pool([([10.0, 10.1], "clean"), ([30.0, 31.0, 32.0], "contended"), ([10.2], "clean")])
    assert verdict_of(e2) == "clean" and e2["interference"]["dropped_rounds"] == [1]
    assert m2.samples_ms == [10.0, 10.1, 10.2] and e2["round_sizes"] == [2, 1]
    assert e2["round_index"] == [0, 2] and e2["rounds"] == 3
    assert e2["dropped_rounds"] == [
        {"round": 1, "verdict": "contended", "samples_ms": [30.0, 31.0, 32.0]}
    ]
    assert m2.stats.median_ms == pytest.approx(10.1)
    # one contended of two: one round alone is no interval, both count
    m4, e4 = _pool([([10.0, 10.1], "clean"), ([30.0], "contended")])
    assert verdict_of(e4) == "contended" and m4.stats.n == 3 and "dropped_rounds" not in e4
    # two contended of three: not enough clean rounds, all count and the verdict is contended
    m3, e3 = _pool([([10.0], "contended"), ([30.0], "contended"), ([10.2], "clean")])
    assert verdict_of(e3) == "contended" and m3.stats.n == 3 and "dropped_rounds" not in e3
    assert merge_rounds({"verdict": "clean"}, {"verdict": "unknown"})["verdict"] == "unknown"


# -- canary -----------------------------------------------------------------------------------


def test_canary_checkpoints_are_stored_with_the_run(db_url):
    store = Store(db_url)
    rid = store.create_run("test", {}, {"machine_id": "m1", "machine": "test box"})
    can = SweepCanary(store, rid, 1)
    assert can.checkpoint("start") is not None and can.checkpoint("end") is not None
    rows = store.measurement_rows([rid], kind=CANARY_KIND)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["median_ms"] > 0
    cps = rows[0]["extra"]["canary"]["checkpoints"]
    assert [c["at"] for c in cps] == ["start", "end"] and all(c["median_ms"] > 0 for c in cps)
    assert store.get_measurement(rid, canary_key(1)) is not None
    # a resumed run appends to the same row
    SweepCanary(store, rid, 1).checkpoint("after resume")
    cps = store.measurement_rows([rid], kind=CANARY_KIND)[0]["extra"]["canary"]["checkpoints"]
    assert [c["at"] for c in cps] == ["start", "end", "after resume"]
    line = run_canary_text(store, rid)
    assert line is not None and "no earlier run on this machine" in line and "start" in line


def test_canary_history_line():
    assert "1.50x slower than usual" in history_text(15.0, [10.0, 10.2, 9.8])
    assert "about as fast as usual" in history_text(10.1, [10.0, 10.2, 9.8])
    assert "not measured" in history_text(None, [10.0])


def _rows(run_id, name, med, n=30, kind="encoder", seed=0, extra=None):
    rng = np.random.default_rng(seed)
    s = [float(x) for x in rng.lognormal(math.log(med), 0.01, n)]
    return {
        "run_id": run_id,
        "kind": kind,
        "name": name,
        "resolution": 256,
        "samples_ms": s,
        "median_ms": float(np.median(s)),
        "machine_id": "m1",
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
        "protocol": "standard",
        "status": "ok",
        "extra": extra or {},
    }


def test_compare_normalises_a_slower_machine_away():
    from harness.compare import compare_tables

    base = [_rows("a", "enc", 100.0), _rows("a", "canary-mm-dw-v1", 20.0, kind=CANARY_KIND)]
    # the whole machine is 1.5x slower: encoder and canary alike
    cand = [
        _rows("b", "enc", 150.0, seed=1),
        _rows("b", "canary-mm-dw-v1", 30.0, kind=CANARY_KIND, seed=1),
    ]
    raw = compare_tables([base[0]], [cand[0]])
    assert raw.regressions
    b, c, note = normalise_pair(base, cand)
    assert note.normalised and note.ratio == pytest.approx(1.5, rel=0.02)
    assert all(r["kind"] != CANARY_KIND for r in b + c)
    assert not compare_tables(b, c).regressions
    assert "machine 1.50x slower" in note.text()
    # the encoder got slower on an unchanged machine: still a regression after normalising
    cand2 = [
        _rows("b", "enc", 150.0, seed=1),
        _rows("b", "canary-mm-dw-v1", 20.0, kind=CANARY_KIND, seed=1),
    ]
    b, c, note = normalise_pair(base, cand2)
    assert compare_tables(b, c).regressions
    # no canary on one side: compared as measured
    b, c, note = normalise_pair([base[0]], cand)
    assert not note.normalised and "none in the baseline" in note.text()


def test_a_canary_ratio_inside_its_own_noise_band_is_not_divided_out():
    from harness.canary import SPEED_BAND

    base = [_rows("a", "enc", 100.0), _rows("a", "canary-mm-dw-v1", 20.0, kind=CANARY_KIND)]
    # the canary moved 12% (quiet back-to-back runs here moved it 0.885-1.263x on their own)
    cand = [
        _rows("b", "enc", 100.0, seed=1),
        _rows("b", "canary-mm-dw-v1", 22.4, kind=CANARY_KIND, seed=1),
    ]
    b, c, note = normalise_pair(base, cand)
    assert note.ratio == pytest.approx(1.12, rel=0.02) and not note.normalised
    assert note.band == SPEED_BAND and "within the canary's own run-to-run noise" in note.text()
    assert np.median(c[0]["samples_ms"]) == pytest.approx(100.0, rel=0.03)  # as measured
    assert note.to_dict()["band"] == SPEED_BAND
    # band=1 divides whatever the ratio (the behaviour before the band)
    b, c, note = normalise_pair(base, cand, band=1.0)
    assert note.normalised and np.median(c[0]["samples_ms"]) == pytest.approx(100 / 1.12, rel=0.03)
    # --raw says so
    assert "(--raw)" in normalise_pair(base, cand, normalise=False)[2].text()


def test_nightly_history_inside_the_band_is_left_as_measured():
    runs = [{"id": "r0"}, {"id": "r1"}]
    rows = [
        _rows("r0", "enc", 100.0),
        _rows("r0", "c", 20.0, kind=CANARY_KIND),
        _rows("r1", "enc", 100.0),
        _rows("r1", "c", 22.0, kind=CANARY_KIND),
    ]
    out, per_run = normalise_history(runs, rows)
    r0 = next(r for r in out if r["run_id"] == "r0")
    assert set(per_run) == {"r0", "r1"}
    assert np.median(r0["samples_ms"]) == pytest.approx(100.0, rel=0.03)


def test_nightly_history_is_scaled_to_tonights_machine():
    runs = [{"id": "r0"}, {"id": "r1"}]
    rows = [
        _rows("r0", "enc", 100.0),
        _rows("r0", "c", 20.0, kind=CANARY_KIND),
        _rows("r1", "enc", 150.0),
        _rows("r1", "c", 30.0, kind=CANARY_KIND),
    ]
    out, per_run = normalise_history(runs, rows)
    assert set(per_run) == {"r0", "r1"} and all(r["kind"] != CANARY_KIND for r in out)
    r0 = next(r for r in out if r["run_id"] == "r0")
    assert np.median(r0["samples_ms"]) == pytest.approx(150.0, rel=0.03)


# -- what the analysis does with contended measurements --------------------------------------


def test_nightly_never_calls_a_regression_on_a_contended_run(db_url):
    from harness.nightly import evaluate

    store = Store(db_url)
    rng = np.random.default_rng(0)
    for i, level in enumerate([10.0] * 5 + [13.0, 13.0]):
        rid = f"n{i:02d}"
        store.create_run("nightly", {}, {"machine_id": "m1"}, run_id=rid)
        s = [float(x) for x in rng.lognormal(math.log(level), 0.02, 40)]
        contended = i >= 5
        key = MeasurementKey("encoder", "enc-a", resolution=256, protocol="rigorous")
        store.add_measurement(
            rid,
            key,
            Measurement(samples_ms=s, stats=summarize(s), protocol="rigorous", threads=1),
            extra={
                "interference": {"version": 1, "verdict": "contended" if contended else "clean"}
            },
        )
        store.set_run_status(rid, "done")
    res = evaluate(store, "n06")
    assert (
        [k.status for k in res.keys] == ["contended"] and res.exit_code == 0 and not res.confirmed
    )
    assert res.to_dict()["contended"] == ["encoder enc-a@256"]
    # the contended night n05 was kept out of the baseline of n06
    assert 5 not in res.keys[0].steps[-1].baseline_runs


def test_points_and_compare_flag_contended_measurements():
    import pandas as pd

    c = {"interference": {"verdict": "contended"}}
    rows = [_rows("a", "enc", 100.0, extra=c), _rows("a", "enc2", 100.0)]
    assert contended_labels(rows) == {"encoder enc@256"}
    assert is_contended('{"interference": {"verdict": "contended"}}') and not is_contended("{}")
    from harness.ttft import compose_ttft

    def part(name, kind, verdict, backend="torch", **key):
        row = _rows("a", name, 1.0, kind=kind, extra={"interference": {"verdict": verdict}})
        row.update(backend=backend, tiling="none", tokens=16, prompt_tokens=0, **key)
        return row

    enc = [
        part("enc", "encoder", "contended"),
        part("enc2", "encoder", "clean"),
        # the same encoder under another runtime, measured clean
        part("enc", "encoder", "clean", backend="onnxrt"),
    ]
    for r in enc:
        r["extra"]["out_dim"] = 64
    pre = [
        part("q", "prefill", "clean", resolution=0),
        part("q", "prefill", "clean", "onnxrt", resolution=0),
    ]
    proj = [
        part("q", "projector", "clean", resolution=0, in_dim=64),
        # onnxrt's projector was disturbed: only onnxrt's point is unreliable
        part("q", "projector", "contended", "onnxrt", resolution=0, in_dim=64),
    ]
    out = compose_ttft(pd.DataFrame(enc), pd.DataFrame(proj), pd.DataFrame(pre))
    got = {
        (r["encoder"], r["backend"]): (r["interference"], r["contended"])
        for r in out.to_dict("records")
    }
    assert got[("enc", "torch")] == ("contended", True)  # its encoder measurement
    assert got[("enc2", "torch")] == ("clean", False)
    assert got[("enc", "onnxrt")] == ("contended", True)  # its projector measurement
    # mixed points (encoder on one runtime, prefill on the other) from their own parts only:
    # the contended torch encoder does not taint the onnxrt encoder's point
    assert got[("enc", "onnxrt+torch")] == ("clean", False)
    assert got[("enc2", "torch+onnxrt")] == ("contended", True)  # onnxrt's projector
    # the columns reach the joined points
    from harness.schema import POINT_COLUMNS

    assert "interference" in POINT_COLUMNS and "contended" in POINT_COLUMNS


def test_choose_shows_contended_points_as_unreliable():
    import pandas as pd

    from harness.choose import choose
    from harness.commands.choose import render

    pts = pd.DataFrame(
        [
            {
                "encoder": "a",
                "resolution": 256,
                "llm": "q",
                "tiling": "none",
                "recipe": "r",
                "ttft_ms": 100.0,
                "ttft_ci_low_ms": 90.0,
                "ttft_ci_high_ms": 110.0,
                "avg5": 60.0,
                "contended": True,
                "latency_source": "measured",
                "machine": "box",
            },
            {
                "encoder": "b",
                "resolution": 256,
                "llm": "q",
                "tiling": "none",
                "recipe": "r",
                "ttft_ms": 80.0,
                "ttft_ci_low_ms": 75.0,
                "ttft_ci_high_ms": 85.0,
                "avg5": 55.0,
                "contended": False,
                "latency_source": "measured",
                "machine": "box",
            },
        ]
    )
    res = choose(pts, 200.0)
    text = render(res)
    assert res.choice is not None and res.choice["contended"] is True
    assert (
        "UNRELIABLE: contended" in text and "1 point(s) measured while the machine was busy" in text
    )


# -- rounds in worker processes (harness/sweep/worker.py) ---------------------------------------


def _tiny_torch_sweep(db_url: str, *extra: str):
    from harness.sweep.configs import compose_sweep

    return compose_sweep(
        "quick",
        [
            f"db={db_url}",
            "report=false",
            "canary=false",
            "progress=false",
            "rounds=2",
            "protocol.min_runs=1",
            "protocol.warmup_runs=0",
            "protocol.retakes=0",
            "encoders.fastvithd.resolutions=[128]",
            *extra,
        ],
    )


def test_rounds_run_in_fresh_worker_processes(db_url, capfd):
    import os

    from harness.sweep.engine import run_sweep

    log: list[str] = []
    out = run_sweep(_tiny_torch_sweep(db_url), command="test", log=log.append)
    # library deprecation notices are shown by the first round's worker only
    notices = [ln for ln in capfd.readouterr().err.splitlines() if "FutureWarning" in ln]
    assert len(notices) == len(set(notices))
    n = out.plan.n_measurements
    assert out.counts == {"measured": 2 * n, "reused": 0, "skipped": 0, "failed": 0}
    assert any("each in a fresh worker process" in line for line in log)
    rows = Store(db_url).measurement_rows([out.run_id])
    assert len(rows) == n and all(r["status"] == "ok" and r["extra"]["rounds"] == 2 for r in rows)
    pids = {tuple(r["extra"]["round_pids"]) for r in rows}
    assert len(pids) == 1  # one worker per round measures the whole grid, interleaved
    ((first, second),) = pids
    assert first != second and os.getpid() not in (first, second)
    assert Store(db_url).list_runs()[-1]["status"] == "done"
    # the run-to-run term (no history in this store: the default) reaches the workers' rows
    assert any(line.startswith("intervals include run-to-run variance") for line in log)
    for r in rows:
        assert r["extra"]["run_to_run"]["source"] == "default"
        lo, hi = r["extra"]["ci_within_ms"]
        assert r["ci_low_ms"] < lo <= r["median_ms"] <= hi < r["ci_high_ms"]


def test_rounds_stay_in_process_when_the_config_needs_run_time_registrations(db_url):
    import dataclasses
    import os

    from harness.backends import get_backend, register_backend
    from harness.sweep.engine import run_sweep

    register_backend(
        "torch-registered-here",
        dataclasses.replace(get_backend("torch"), name="torch-registered-here"),
    )
    cfg = _tiny_torch_sweep(db_url, "backend.encoder_backend=torch-registered-here")
    log: list[str] = []
    out = run_sweep(cfg, command="test", log=log.append)
    assert any(
        line.startswith("rounds run in this process: the config does not resolve") for line in log
    )
    rows = [r for r in Store(db_url).measurement_rows([out.run_id]) if r["kind"] == "encoder"]
    assert rows and all(r["extra"]["round_pids"] == [os.getpid()] * 2 for r in rows)
    # isolation=process refuses instead of falling back
    cfg = _tiny_torch_sweep(
        db_url, "backend.encoder_backend=torch-registered-here", "isolation=process"
    )
    with pytest.raises(UserError, match="isolation=process: the config does not resolve"):
        run_sweep(cfg, command="test", log=log.append)


def test_isolation_setting_is_checked():
    from harness.sweep.worker import validate_isolation, wants_processes

    with pytest.raises(UserError, match="isolation must be one of auto, process, inline"):
        validate_isolation("threads")
    assert not wants_processes("auto", 1, True, "sqlite:////tmp/x.db")
    assert not wants_processes("auto", 3, False, "sqlite:////tmp/x.db")  # fake backends
    assert wants_processes("auto", 3, True, "sqlite:////tmp/x.db")
    assert not wants_processes("auto", 3, True, "sqlite://")
    with pytest.raises(UserError, match="in-memory"):
        wants_processes("process", 3, True, "sqlite://")


# -- run-to-run variance (harness/drift.py) ----------------------------------------------------


def test_pooled_log_sd_of_back_to_back_runs():
    from harness.drift import pooled_log_sd

    # every key 10% slower in the second run: each pair's log gap / sqrt(2), times 1.4826
    sd, keys = pooled_log_sd({k: [100.0 * k, 110.0 * k] for k in (1, 2, 3)})
    assert keys == 3 and sd == pytest.approx(1.4826 * math.log(1.1) / math.sqrt(2), rel=1e-9)
    # a key seen once says nothing; one key whose code changed (2x) does not move the median
    sd2, keys2 = pooled_log_sd(
        {1: [100.0, 110.0], 2: [200.0, 220.0], 3: [50.0, 55.0], 4: [10.0, 20.0], 5: [7.0]}
    )
    assert keys2 == 4 and sd2 == pytest.approx(sd, rel=1e-9)
    assert pooled_log_sd({1: [5.0]}) == (0.0, 0)


def test_run_to_run_term_widens_in_quadrature():
    from harness.drift import RunToRun
    from harness.stats import widen_log

    lo, hi = widen_log(100.0, 98.0, 102.0, 0.1)
    assert lo == pytest.approx(100 * math.exp(-math.hypot(math.log(100 / 98), 0.1)))
    assert hi == pytest.approx(100 * math.exp(math.hypot(math.log(1.02), 0.1)))
    assert widen_log(100.0, 98.0, 102.0, 0.0) == (98.0, 102.0)
    term = RunToRun(0.08, "default")
    assert term.half_width(0.95) == pytest.approx(1.959964 * 0.08, rel=1e-5)
    # two sweeps of the same thing, the second 20% slower (the machine, not the code), each
    # tight within itself: apart without the term, overlapping with it
    a, b = (100.0, 99.0, 101.0), (120.0, 118.8, 121.2)
    assert a[2] < b[1]
    (alo, ahi), (blo, bhi) = term.widen(*a, 0.95), term.widen(*b, 0.95)
    assert ahi >= blo and alo < 100.0 < ahi and blo < 120.0 < bhi
    assert "+-17.0% at 95%" in term.describe() and "no history" in term.describe()


def test_pool_round_adds_the_sweeps_run_to_run_term():
    from harness.drift import RunToRun

    term = RunToRun(0.05, "setting")
    m, e = pool_round(_m([10.0, 10.1, 10.2], "clean"), {}, None, 0, run_to_run=term)
    plain, e0 = pool_round(_m([10.0, 10.1, 10.2], "clean"), {}, None, 0)
    assert "run_to_run" not in e0 and "ci_within_ms" not in e0
    assert e["run_to_run"] == {"sd": 0.05, "source": "setting", "runs": 0, "keys": 0}
    assert e["ci_within_ms"] == [plain.stats.ci_low_ms, plain.stats.ci_high_ms]
    assert m.stats.ci_low_ms < plain.stats.ci_low_ms and m.stats.ci_high_ms > plain.stats.ci_high_ms
    assert m.stats.median_ms == plain.stats.median_ms and m.samples_ms == plain.samples_ms
    # a later round widens the interval over rounds the same way
    prev = {"status": "ok", "samples_ms": m.samples_ms, "extra": e}
    m2, e2 = pool_round(_m([10.4, 10.5], "clean"), {}, prev, 1, run_to_run=term)
    lo, hi = e2["ci_within_ms"]
    assert m2.stats.ci_low_ms < lo and m2.stats.ci_high_ms > hi and e2["rounds"] == 2


def _history(store: Store, machine: str, levels: list[float], verdict: str = "clean") -> list[str]:
    ids = []
    for level in levels:
        rid = store.create_run("test", {}, {"machine_id": machine, "machine": "test box"})
        for i, name in enumerate(("fastvit", "fastvithd", "convnext-l", "vit-l-14")):
            base = 10.0 * (i + 1) * level
            key = MeasurementKey("encoder", name, 256, protocol="quick")
            m = _m([base, base * 1.001, base * 0.999], verdict)
            store.add_measurement(rid, key, m, extra={"interference": m.interference})
        ids.append(rid)
    return ids


def test_run_to_run_is_estimated_from_the_machines_history(db_url):
    from harness.drift import DEFAULT_SD, estimate, pooled_log_sd, resolve

    store = Store(db_url)
    assert estimate(store, "m1").source == "default" and estimate(store, "m1").sd == DEFAULT_SD
    ids = _history(store, "m1", [1.0])
    assert estimate(store, "m1").source == "default"  # one earlier run: nothing to compare
    ids += _history(store, "m1", [1.12, 0.95])
    _history(store, "m2", [3.0, 0.2])  # another machine: not this one's history
    _history(store, "m1", [5.0], verdict="contended")  # contended rows are not history
    term = estimate(store, "m1", exclude_run=ids[-1])
    assert term.source == "history" and term.keys == 4
    expected, _ = pooled_log_sd({k: [1.0, 1.12] for k in range(4)})
    assert term.sd == pytest.approx(expected, rel=1e-6)
    full = estimate(store, "m1")
    assert full.source == "history" and full.runs == 4 and full.sd > 0
    assert "from 4 key(s) measured in 4 other run(s)" in full.describe()
    # the sweep setting: off, a number, auto (fake backends: off)
    assert resolve("off", store, "m1", "x", True) is None
    assert resolve(0, store, "m1", "x", True) is None
    fixed = resolve(0.03, store, "m1", "x", True)
    assert fixed is not None and fixed.sd == 0.03 and fixed.source == "setting"
    assert resolve("auto", store, "m1", "x", False) is None
    auto = resolve("auto", store, "m1", "x", True)
    assert auto is not None and auto.source == "history"


@pytest.mark.parametrize("bad", ["sometimes", -0.1, 0.8, float("nan"), True, [0.1]])
def test_bad_run_to_run_settings_are_refused(bad):
    from harness.drift import parse_setting

    with pytest.raises(UserError, match="run_to_run must be"):
        parse_setting(bad)
    assert parse_setting("OFF") == "off" and parse_setting(False) == "off"
    assert parse_setting("auto") == "auto" and parse_setting("0.05") == 0.05


def test_fake_runs_are_not_a_machines_history(db_url):
    from harness.drift import estimate

    store = Store(db_url)
    ids = _history(store, "m1", [1.0, 1.2])
    before = estimate(store, "m1")
    for _ in range(3):  # fake sweeps repeat their latencies exactly
        rid = store.create_run("test", {}, {"machine_id": "m1", "machine": "test box"})
        for i, name in enumerate(("fastvit", "fastvithd", "convnext-l", "vit-l-14")):
            key = MeasurementKey("encoder", name, 256, protocol="quick", backend="fake")
            store.add_measurement(rid, key, _m([10.0 * (i + 1)] * 3, "clean"))
    after = estimate(store, "m1")
    assert after.source == "history" and after.runs == 2 == before.runs
    assert after.sd == pytest.approx(before.sd) and after.sd > 0.05
    assert ids
