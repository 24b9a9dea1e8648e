"""The report in a real headless chromium (Debian's), driven over the DevTools pipe.

A tiny Chrome DevTools Protocol client talks to ``chromium --remote-debugging-pipe``
(JSON messages separated by NUL bytes on file descriptors 3 and 4), so no websocket
library is needed. It records console errors, uncaught exceptions and JavaScript dialogs,
counts plotly's rendered ``.main-svg`` elements, and takes a screenshot whose PNG is decoded
here with zlib + numpy to count distinct colours.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report.html import write_report

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"
    ),
]

EVIL = "<script>alert(1)</script>"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
    "--window-size=1280,1600",
)


class Browser:
    """Minimal CDP-over-pipe client: send commands, collect events, one page session."""

    def __init__(self, user_data_dir: Path):
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()

        def wire() -> None:  # runs in the child: CDP expects its pipe on fds 3 (in) and 4 (out)
            # Move both ends above 10 first: a pipe end may already sit on fd 3 or 4, and
            # dup2 onto itself would keep its close-on-exec flag.
            high_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            preexec_fn=wire,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_child_r], [], [], left)
            if ready:
                chunk = os.read(self._from_child_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self,
        method: str,
        params: dict | None = None,
        *,
        session: bool = True,
        timeout: float = 30.0,
    ) -> dict:
        self._next_id += 1
        msg: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._on_event(reply)

    def _on_event(self, event: dict) -> None:
        self.events.append(event)
        if event.get("method") == "Page.javascriptDialogOpening":
            # A dialog blocks the page; dismiss it (after recording it) so the test can finish.
            self._next_id += 1
            os.write(
                self._to_child_w,
                json.dumps(
                    {
                        "id": self._next_id,
                        "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True},
                        "sessionId": self.session,
                    }
                ).encode()
                + b"\0",
            )

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._on_event(self._read_message(deadline))
        except TimeoutError:
            pass

    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return res["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child_w)
        os.close(self._from_child_r)

    # -- what the tests assert on -----------------------------------------------------------
    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(
                    "Uncaught: " + str(d.get("exception", {}).get("description") or d.get("text"))
                )
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(
                    "console.error: "
                    + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))
                )
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        return out

    def dialogs(self) -> list[str]:
        return [
            e["params"].get("message", "")
            for e in self.events
            if e.get("method") == "Page.javascriptDialogOpening"
        ]


def load(html_path: Path, tmp_path: Path) -> Browser:
    b = Browser(tmp_path / "chromium-profile")
    try:
        b.open_page()
        b.send("Page.navigate", {"url": html_path.resolve().as_uri()})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b.evaluate("document.readyState") == "complete" and b.evaluate(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length > 0"
            ):
                break
            b.pump(0.3)
        b.pump(1.0)  # let late errors (async plotly work) arrive
    except BaseException:
        b.close()
        raise
    return b


def decode_png(data: bytes) -> np.ndarray:
    """RGB(A) pixels of an 8-bit non-interlaced PNG (what chromium writes), via zlib."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), dtype=np.int64)
    prev = np.zeros(width * bpp, dtype=np.int64)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: running sum per channel
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif f == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average / Paeth depend on the reconstructed left pixel: go pixel by pixel
            cur = np.zeros_like(line)
            for x in range(0, width * bpp, bpp):
                a = cur[x - bpp : x] if x else np.zeros(bpp, dtype=np.int64)
                b = prev[x : x + bpp]
                if f == 3:
                    cur[x : x + bpp] = (line[x : x + bpp] + (a + b) // 2) % 256
                else:
                    c = prev[x - bpp : x] if x else np.zeros(bpp, dtype=np.int64)
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
                    cur[x : x + bpp] = (line[x : x + bpp] + pred) % 256
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp).astype(np.uint8)


def distinct_colours(pixels: np.ndarray) -> int:
    rgb = pixels[..., :3].reshape(-1, 3).astype(np.int64)
    return int(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]).size)


def fixture_points() -> pd.DataFrame:
    rows = []
    for enc, stride, k in (("fastvithd", 64, 0.1), ("fastvit", 32, 0.2), (EVIL, 32, 0.3)):
        for llm, per_token, base in (("qwen2-0.5b", 0.4, 50.0), ("qwen2-7b", 4.0, 58.0)):
            for res in (256, 512, 1024):
                tokens = (res // stride) ** 2
                enc_ms, pre_ms = k * res * res / 1000, per_token * tokens + 15
                t = enc_ms + 1 + pre_ms
                rows.append(
                    {
                        "encoder": enc,
                        "resolution": res,
                        "llm": llm,
                        "tiling": "none",
                        "recipe": "llava-1.5",
                        "tokens": tokens,
                        "encoder_ms": enc_ms,
                        "projector_ms": 1.0,
                        "prefill_ms": pre_ms,
                        "ttft_ms": t,
                        "ttft_ci_low_ms": 0.95 * t,
                        "ttft_ci_high_ms": 1.05 * t,
                        "ttft_p90_ms": 1.1 * t,
                        "avg5": base + 2 * np.log2(res / 256) - (2 if enc != "fastvithd" else 0),
                        "latency_source": "measured",
                        "accuracy_source": "ingested",
                        "estimated": False,
                        "machine": "test-box",
                        "backend": "torch-cpu",
                        "run_id": "r1",
                    }
                )
    return pd.DataFrame(rows)


def test_report_renders_without_errors_and_escapes_names(tmp_path):
    paths = write_report(
        fixture_points(), tmp_path / "report", f"browser test {EVIL}", static=False
    )
    b = load(paths.index_html, tmp_path)
    try:
        n_svg = b.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
        n_plots = b.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        legend = b.evaluate(
            "Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent).join('\\n')"
        )
        cells = b.evaluate("Array.from(document.querySelectorAll('td')).map(e => e.textContent)")
        title = b.evaluate("document.title")
        shot = b.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": 0, "y": 0, "width": 1280, "height": 1200, "scale": 0.5},
            },
        )
        errors, dialogs = b.errors(), b.dialogs()
    finally:
        b.close()
    assert errors == []
    assert dialogs == [], "a user-provided name was executed as script"
    assert n_plots == len(paths.figures) >= 3
    assert n_svg >= n_plots
    # The hostile encoder name is shown as text in the legend, the table and the title.
    assert EVIL in legend
    assert EVIL in cells
    assert title.endswith(EVIL)
    pixels = decode_png(base64.b64decode(shot["data"]))
    assert pixels.shape[:2] == (600, 640)
    assert distinct_colours(pixels) > 50, "screenshot looks blank"


def test_png_decoder_reads_known_pixels():
    # A 2x2 RGB PNG written by hand with filters None and Up: the decoder must return exact bytes.
    rows = [b"\x00" + bytes([255, 0, 0, 0, 255, 0]), b"\x02" + bytes([0, 0, 255, 0, 0, 0])]
    raw = zlib.compress(b"".join(rows))

    def chunk(t: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    px = decode_png(png)
    assert px[0, 0].tolist() == [255, 0, 0] and px[0, 1].tolist() == [0, 255, 0]
    assert px[1, 0].tolist() == [255, 0, 255] and px[1, 1].tolist() == [0, 255, 0]
    assert distinct_colours(px) == 3


def test_paper_report_renders(tmp_path):
    paper = pytest.importorskip(
        "harness.accuracy.paper", reason="harness.accuracy.paper not written yet"
    )
    from harness.points import load_points

    res = load_points(source="paper")
    assert len(res.points) > 0 and paper is not None
    paths = write_report(res, tmp_path / "paper", "paper", static=False)
    b = load(paths.index_html, tmp_path)
    try:
        n_svg = b.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
        errors = b.errors()
    finally:
        b.close()
    assert errors == []
    assert n_svg >= len(paths.figures) >= 1
