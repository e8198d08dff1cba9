"""The audit report in a real headless browser (Debian's Chromium): it renders, prints, and loads nothing remote.

"Loads nothing" is checked two ways: statically (no src/href/url()/import pointing anywhere but the page
itself) and dynamically (Chromium's net-log records no request the page initiated). A control page that
does load a pixel from a local HTTP server proves the net-log check can see a request.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import struct
import subprocess
import threading
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from sovkit.signing.keys import LocalSigner, write_keypair
from tests.conftest import INVENTORIES, run_cli
from tests.sitefactory import Site

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-default-apps", "--no-pings"]
WAIVER_REASON = "base model reviewed: MSIT review 2026-031"


def _chromium(tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kr-telco with one waived finding: the report shows warn findings, a waiver, data flows, an ML-BOM."""
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "site"
    shutil.copytree(INVENTORIES / "kr-telco", root)
    site = Site(root)
    site.data["waivers"] = [{"rule": "PRV-008", "resource": "models/ax-4-light", "reason": WAIVER_REASON,
                             "expires": "2099-12-31"}]
    site.save()
    key = tmp / "op.key"
    write_keypair(LocalSigner.generate(), key, None)
    r = run_cli("check", site.path, "--key", key, "--state-dir", tmp / "state")  # one signed attestation
    assert r.code == 0, r.text
    r = run_cli("audit", site.path, "-o", tmp / "pack", "--key", key, "--state-dir", tmp / "state")
    assert r.code == 0, r.text
    return tmp / "pack"


class _Dom(HTMLParser):
    """Collects element text by id and every attribute that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_findings = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        for name in ("src", "href", "srcset", "poster", "data", "action", "background"):
            if a.get(name) is not None:
                self.refs.append((tag, name, a[name] or ""))
        if a.get("style"):
            self.refs.append((tag, "style", a["style"] or ""))
        self.stack.append(a.get("id"))
        if a.get("id") == "policy-findings":
            self._in_findings = len(self.stack)
        if self._in_findings and tag == "tr":
            self._row = []
        if self._row is not None and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self._cell is not None and tag in ("td", "th") and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if self.stack:
            if self._in_findings == len(self.stack):
                self._in_findings = 0
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        for ident in self.stack:
            if ident:
                self.text[ident] = self.text.get(ident, "") + data
        if self._cell is not None:
            self._cell.append(data)


def _png_info(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the decoded image data."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], len(set(zlib.decompress(idat)))


def test_report_renders_site_and_policy_results_and_a_screenshot(pack: Path, tmp_path: Path) -> None:
    report = json.loads((pack / "report.json").read_text())
    url = (pack / "report.html").as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Dom()
    parsed.feed(dom.stdout)
    assert parsed.text["site-name"] == "kr-telco-gasan"
    assert "ALLOWED" in parsed.text["policy-verdict"]
    assert report["policy"]["pack_digest"] in parsed.text["policy-verdict"]
    rows = [r for r in parsed.rows if len(r) == 6 and r[0] != "Severity"]
    expected = [(f["severity"], f["id"], f["resource"]) for f in report["policy"]["findings"]]
    assert len(expected) >= 3, "the kr-telco site should produce policy findings"
    assert [(r[0], r[1], r[2]) for r in rows] == expected
    waived = [r for r in rows if r[1] == "PRV-008"]
    assert waived and waived[0][5] == f"waived: {WAIVER_REASON} (until 2099-12-31)"
    for flow in report["data_flows"]:
        assert flow["target"] in parsed.text["data-flows"]
    assert "bom/ax-4-light.cdx.json" in parsed.text["models"]

    # the verdict at the top: decision with counts, the log checked at audit time, the signing keyid
    assert parsed.text["verdict-policy"].split() == ["ALLOWED", "0", "denial(s),", "4", "warning(s),", "1",
                                                     "waived", "·", "made", "on", "policy/input.json"]
    assert " ".join(parsed.text["verdict-log"].split()).startswith("verified when this pack was written: 1 entries")
    assert report["signed_by"] in parsed.text["verdict-signer"] and len(report["signed_by"]) == 64
    assert dom.stdout.index('id="verdict"') < dom.stdout.index('id="overview"')
    # licence, origin and base models of each model
    (model,) = report["model_boms"]
    (row,) = [r for r in _rows(dom.stdout, "model-table") if r and r[0] == "ax-4-light"]
    assert row[2:5] == [model["publisher"], model["license"], model["origin"]] == ["skt-ai", "apache-2.0", "KR"]
    assert row[5] == "Qwen2.5-7B (Alibaba Cloud, apache-2.0, CN)"

    shot = tmp_path / "report.png"
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    width, height, distinct = _png_info(shot)
    assert (width, height) == (1280, 2000)
    assert shot.stat().st_size > 20_000 and distinct > 20, "the screenshot is blank"


def _pdf_pages(tmp_path: Path, html: Path) -> int:
    pdf = tmp_path / (html.stem + ".pdf")
    r = _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", html.as_uri())
    assert r.returncode == 0 and pdf.is_file(), r.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    return len(re.findall(rb"/Type\s*/Page[^s]", data))


def test_report_prints_without_a_page_per_section(pack: Path, tmp_path: Path) -> None:
    """Sections follow each other on A4 (a page per section was 8+ mostly empty pages).

    Measured against the same report with a page break forced before every section: the real print must take
    fewer pages (the control view makes the report long, so a fixed page count would not say anything)."""
    html = (pack / "report.html").read_text()
    sections = html.count("<section")
    assert sections >= 8
    forced = tmp_path / "forced.html"
    forced.write_text(html.replace("</head>", "<style>section { break-before: page; }</style></head>", 1))
    pages, forced_pages = _pdf_pages(tmp_path, pack / "report.html"), _pdf_pages(tmp_path, forced)
    assert forced_pages >= sections
    assert 2 <= pages < forced_pages, f"{pages} page(s); {forced_pages} with a page per section"


def test_rule_ids_do_not_wrap_in_a_narrow_window(pack: Path, tmp_path: Path) -> None:
    """Measured by Chromium's layout: every rule id is one line box, even where the table is squeezed."""
    html = (pack / "report.html").read_text()
    ids = "document.querySelectorAll('#policy-findings td:nth-child(2) code')"  # the Rule column
    probe = (f"<script>document.body.setAttribute('data-wrapped', JSON.stringify([...{ids}]"
             ".filter(e => e.getClientRects().length !== 1).map(e => e.textContent)));"
             f"document.body.setAttribute('data-rules', {ids}.length);</script>")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    r = _chromium(tmp_path, "--window-size=480,2000", "--dump-dom", page.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    rules = re.search(r'data-rules="(\d+)"', r.stdout)
    wrapped = re.search(r'data-wrapped="([^"]*)"', r.stdout)
    assert rules and wrapped, r.stdout[-2000:]
    assert int(rules.group(1)) >= 5
    assert json.loads(wrapped.group(1).replace("&quot;", '"')) == []


def test_verdict_says_when_the_log_does_not_verify_with_the_pack_key(tmp_path: Path) -> None:
    """The attestations were signed by one key, the pack by another: the verdict says NOT verified."""
    apply_key, audit_key = tmp_path / "apply.key", tmp_path / "audit.key"
    write_keypair(LocalSigner.generate(), apply_key, None)
    write_keypair(LocalSigner.generate(), audit_key, None)
    assert run_cli("check", INVENTORIES / "demo", "--key", apply_key, "--state-dir", tmp_path / "s").code == 0
    r = run_cli("audit", INVENTORIES / "demo", "-o", tmp_path / "pack", "--key", audit_key, "--state-dir",
                tmp_path / "s")
    assert r.code == 0, r.text
    report = json.loads((tmp_path / "pack/report.json").read_text())
    assert report["attestation_check"]["verified"] is False and report["attestation_check"]["entries"] == 1
    parsed = _Dom()
    parsed.feed((tmp_path / "pack/report.html").read_text())
    assert "NOT verified with the key that signs this pack" in " ".join(parsed.text["verdict-log"].split())


def _rows(html: str, table_id: str) -> list[list[str]]:
    """Cell texts of each body row of the table with ``table_id``."""
    body = html[html.index(f'id="{table_id}"'):]
    body = body[:body.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    return [[" ".join(re.sub(r"<[^>]+>", "", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
            for row in rows]


def test_report_html_references_nothing_outside_itself(pack: Path) -> None:
    html = (pack / "report.html").read_text()
    parsed = _Dom()
    parsed.feed(html)
    assert not parsed.tags & {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "source",
                              "base", "form"}, parsed.tags
    assert all(kind == "href" and value.startswith("#") for _, kind, value in parsed.refs), parsed.refs
    styles = "".join(re.findall(r"<style>(.*?)</style>", html, flags=re.S))
    assert styles, "the stylesheet must be inline"
    assert "url(" not in styles and "@import" not in styles and "@font-face" not in styles
    assert "@media print" in styles


def _page_requests(netlog: Path) -> list[str]:
    """URLs of network requests the page initiated (browser-internal ones have initiator 'not an origin')."""
    log = json.loads(netlog.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params: dict[str, Any] = event.get("params") or {}
        if types.get(event["type"]) != "URL_REQUEST_START_JOB" or params.get("initiator") == "not an origin":
            continue
        if re.match(r"^(https?|wss?|ftp)://", params.get("url", "")):
            urls.append(params["url"])
    return urls


def test_report_loads_nothing_from_the_network(pack: Path, tmp_path: Path) -> None:
    netlog = tmp_path / "netlog.json"
    r = _chromium(tmp_path, f"--log-net-log={netlog}", "--net-log-capture-mode=Everything", "--dump-dom",
                  (pack / "report.html").as_uri())
    assert r.returncode == 0 and "kr-telco-gasan" in r.stdout
    assert _page_requests(netlog) == []


def test_control_page_with_a_remote_image_is_caught_by_the_net_log(tmp_path: Path) -> None:
    """Proves the check above can fail: a page loading one pixel over HTTP shows up, and the server saw it."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = tmp_path / "control.html"
        pixel = f"http://127.0.0.1:{server.server_address[1]}/pixel.png"
        page.write_text(f'<!DOCTYPE html><html><body><h1>control</h1><img src="{pixel}"></body></html>')
        netlog = tmp_path / "netlog.json"
        r = _chromium(tmp_path, f"--log-net-log={netlog}", "--net-log-capture-mode=Everything", "--dump-dom",
                      page.as_uri())
    finally:
        server.shutdown()
        thread.join()
    assert r.returncode == 0
    assert hits == ["/pixel.png"]
    assert _page_requests(netlog) == [pixel]
    parsed = _Dom()
    parsed.feed(page.read_text())
    assert ("img", "src", pixel) in parsed.refs, "the static check must see the remote image too"
