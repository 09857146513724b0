"""The Command Center and chimera.js in a real headless Chromium against a real ``chimera serve``.

Debian's chromium (``scripts/setup`` installs it) is driven by Playwright through
``executable_path``; nothing is downloaded. One browser per module; each test has
its own context. The pages and ``chimera.js`` are the shipped files, served by the
server itself; the "other origin" is a ``python -m http.server`` on another port.

Screenshots go to ``$CHIMERA_SCREENSHOTS`` (``docs/`` to refresh docs/browser.md's) or to
the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from playwright.sync_api import Browser, FloatRect, Page, WebSocketRoute, sync_playwright
from websockets.sync.client import connect

from chimera.auth.tokens import LEEWAY_SECONDS
from chimera.v1 import jobs_pb2 as pb
from chimera.v1.jobs_pb2_grpc import JobServiceStub
from tests.security import SECRET, token

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing: the browser tests drive Debian's chromium "
        "(scripts/setup installs it with apt-get as root)",
        allow_module_level=True,
    )

SERVING = re.compile(r"serving gRPC on [\d.]+:(\d+) and WebSocket on [\d.]+:(\d+)")
GUIDE_BRIEF = "Create a login form with email and password"
WS_ROUTE = re.compile(r".*/ws/orchestrate/.*")
# Another frontend's pages: follow.js follows ?job= on ?backend= with chimera.js imported
# from the backend; probe.js tries to read a snapshot and to submit from its origin.
OTHER_ORIGIN = Path(__file__).parent / "other_origin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    grpc_port: int
    ws_port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serve(
    tmp: Path, name: str, *flags: str, db: Path | None = None, ws_port: int = 0
) -> Serve:
    """A real ``chimera serve`` (simulated teams) on loopback; waits for its "serving" line."""
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "chimera", "serve", "--grpc-port", "0",
                "--ws-port", str(ws_port), "--db", str(db or tmp / f"{name}.db"),
                "--teams", "anthropic=simulated,google=simulated",
                "--drain-timeout", "0", *flags,  # stop(): SIGTERM interrupts, no drain
            ],
            stdout=out, stderr=out,
        )
    deadline = time.monotonic() + 30
    while not (found := SERVING.search(log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"chimera serve did not start:\n{log.read_text()}")
        time.sleep(0.05)  # polled: the process reports in a file (sync: playwright's API)
    return Serve(process, int(found[1]), int(found[2]), log)


def snapshot_epoch(serve: Serve, job_id: str) -> str:
    """The epoch the job's snapshot names (the store lifetime its seq numbers are of)."""
    with urllib.request.urlopen(f"{serve.base}/api/jobs/{job_id}", timeout=10) as response:
        epoch: str = json.loads(response.read())["epoch"]
    assert re.fullmatch(r"[0-9a-f]{16}", epoch)
    return epoch


def create_job(serve: Serve, job_id: str, brief: str = GUIDE_BRIEF, tok: str | None = None) -> None:
    """CreateJob over gRPC (the sync stub: Playwright's sync API owns this thread's loop)."""
    with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
        metadata = (("authorization", f"Bearer {tok}"),) if tok else ()
        JobServiceStub(channel).CreateJob(
            pb.CreateJobRequest(brief=brief, job_id=job_id), metadata=metadata, timeout=10
        )


def server_thoughts(serve: Serve, job_id: str, tok: str | None = None) -> dict[str, list[str]]:
    """Each team's thought ids, in order, from the job's whole history (read to the end)."""
    headers = {"Authorization": f"Bearer {tok}"} if tok else None
    thoughts: dict[str, list[str]] = {}
    with connect(f"ws://127.0.0.1:{serve.ws_port}/ws/orchestrate/{job_id}",
                 additional_headers=headers, open_timeout=10) as ws:
        for raw in ws:
            message = json.loads(raw)
            if message["type"] == "thought_added":
                thoughts.setdefault(message["team"], []).append(message["data"]["id"])
    return thoughts


def http_status(url: str, origin: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Origin": origin} if origin else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def answers(url: str) -> bool:
    """``url`` answers 200; False while nothing listens there yet (a server starting)."""
    try:
        return http_status(url) == 200
    except urllib.error.URLError:  # connection refused: not listening yet
        return False


def page_thoughts(page: Page) -> dict[str, list[str]]:
    """Each panel's thought ids as the page shows them."""
    result: dict[str, list[str]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('[data-team]')].map((panel) =>
            [panel.dataset.team, [...panel.querySelectorAll('[data-thought-id]')].map(
                (t) => t.dataset.thoughtId)]))"""
    )
    return {team: ids for team, ids in result.items() if ids}


def wait_attr(page: Page, selector: str, attr: str, values: str | tuple[str, ...],
              timeout: float = 30_000) -> None:
    """Waits until ``selector``'s ``attr`` is one of ``values`` (a function: the page's CSP
    forbids evaluating strings)."""
    wanted = [values] if isinstance(values, str) else list(values)
    page.wait_for_function(
        "([sel, attr, wanted]) => wanted.includes(document.querySelector(sel)?.getAttribute(attr))",
        arg=[selector, attr, wanted], timeout=timeout,
    )


# Records every state #connection goes through in window.__states (an init script: the
# page's CSP does not apply to it).
RECORD_STATES = """
window.__states = [];
document.addEventListener("readystatechange", () => {
  const el = document.getElementById("connection");
  if (document.readyState !== "interactive" || !el) return;
  const note = () => {
    const state = el.dataset.connectionState;
    if (window.__states.at(-1) !== state) window.__states.push(state);
  };
  note();
  new MutationObserver(note).observe(el, { attributeFilter: ["data-connection-state"] });
});
"""


def wait_attr_paused(page: Page, selector: str, attr: str, value: str) -> None:
    """wait_attr for a page whose clock is paused (its animation frames and timers are
    frozen, so the wait runs here, asking the page every 20 ms)."""
    deadline = time.monotonic() + 30
    while page.get_attribute(selector, attr) != value:
        assert time.monotonic() < deadline, f"{selector} {attr} is not {value!r}"
        page.wait_for_timeout(20)


def connection_state(page: Page) -> str | None:
    return page.get_attribute("#connection", "data-connection-state")


def states(page: Page) -> list[str]:
    """The connection states the page went through (with RECORD_STATES installed)."""
    result: list[str] = page.evaluate("() => window.__states")
    return result


def panels(page: Page) -> tuple[FloatRect, FloatRect]:
    """Where the Anthropic and Google panels are."""
    boxes = [page.locator(f'[data-team="{t}"]').bounding_box() for t in ("anthropic", "google")]
    assert boxes[0] and boxes[1]
    return boxes[0], boxes[1]


def screenshot_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("CHIMERA_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.add_init_script(RECORD_STATES)
    yield context.new_page()
    context.close()


@dataclass
class Sites:
    chimera: Serve
    other: str  # an origin given to --allowed-origin
    foreign: str  # the same pages from an origin that is not allowed




@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    tmp = tmp_path_factory.mktemp("browser")
    port = free_port()
    site = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(OTHER_ORIGIN)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    other = f"http://127.0.0.1:{port}"
    chimera = start_serve(tmp, "chimera", "--sim-delay", "0.15", "--allowed-origin", other)
    try:
        deadline = time.monotonic() + 10
        while not answers(f"{other}/follow.html"):
            assert time.monotonic() < deadline, "the other origin's http.server did not start"
            time.sleep(0.05)  # polled: http.server announces nothing
        # localhost and 127.0.0.1 are different origins: the same pages, not allowed.
        yield Sites(chimera, other, f"http://localhost:{port}")
    finally:
        chimera.stop()
        site.terminate()
        site.wait()


# -- the Command Center and the job page ----------------------------------------------------

def test_guide_brief_from_the_form_streams_both_teams_with_the_guide_console_lines(
    page: Page, sites: Sites, tmp_path: Path
) -> None:
    serve = sites.chimera
    console: list[str] = []
    errors: list[str] = []  # a CSP violation, a failed request, an exception
    page.on("console", lambda message: console.append(message.text))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{serve.base}/")
    page.fill("form#submit textarea[name=brief]", GUIDE_BRIEF)
    page.click("form#submit button[type=submit]")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    wait_attr(page, "#job", "data-job-status", "succeeded")
    wait_attr(page, "#connection", "data-connection-state", "closed")

    for team in ("anthropic", "google"):
        panel = page.locator(f'[data-team="{team}"]')
        assert panel.get_attribute("data-status") == "complete"
        assert "export function LoginForm" in panel.locator("[data-code]").inner_text()
        assert re.fullmatch(r"[\d,]+ tokens", panel.locator(".tokens").inner_text())
        assert panel.locator("button.copy").is_visible()
        # Each thought shows its time.
        times = panel.locator(".thought time").all_inner_texts()
        assert times and all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in times)
    assert page.locator("h1.brief").inner_text() == GUIDE_BRIEF
    assert page.locator("#job-missing").is_hidden()  # opened before its job existed
    assert page.get_attribute("#crumb-job", "title") == job_id
    assert page.locator("#cancel").is_hidden()  # the job is over
    # Copy puts the code on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    google = page.locator('[data-team="google"]')
    google.locator("button.copy").click()
    page.wait_for_selector('[data-team="google"] button.copy:has-text("Copied")')
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == google.locator("[data-code]").text_content() and "LoginForm" in copied

    # Exactly the server's thoughts: same ids, same order, none twice.
    shown = page_thoughts(page)
    assert shown == server_thoughts(serve, job_id)
    assert set(shown) == {"anthropic", "google"} and all(shown.values())

    # The guide's console lines, in the guide's order.
    ws_url = f"ws://127.0.0.1:{serve.ws_port}/ws/orchestrate/{job_id}"
    assert console.index(f"[WebSocket] Connecting to {ws_url}") < console.index(
        f"[WebSocket] Connected to job {job_id}"
    )
    messages = [line for line in console if line.startswith("[CommandCenter] WebSocket message: {")]
    assert messages[0].startswith("[CommandCenter] WebSocket message: {type: connected")
    assert any("type: status_change, team: anthropic" in line for line in messages)
    assert any("type: thought_added, team: anthropic" in line for line in messages)
    assert console.index(f"[WebSocket] Connected to job {job_id}") < console.index(messages[0])

    assert errors == []

    shots = screenshot_dir(tmp_path)
    page.screenshot(path=str(shots / "job-page.png"), full_page=True)
    # Laptop: the two teams side by side; phone: one above the other.
    first, second = panels(page)
    assert first["y"] == second["y"] and first["x"] < second["x"]
    page.set_viewport_size({"width": 390, "height": 844})
    first, second = panels(page)
    assert second["y"] >= first["y"] + first["height"]
    page.screenshot(path=str(shots / "job-page-phone.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert sum(int(c) for c in re.findall(r"\d+", background)[:3]) < 150, background
    page.set_viewport_size({"width": 1280, "height": 860})
    page.screenshot(path=str(shots / "job-page-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")

    # Back to the Command Center: the job is in the recent list.
    page.go_back()
    page.wait_for_selector(f'#jobs li[data-job-id="{job_id}"][data-state="succeeded"]')
    assert GUIDE_BRIEF in page.locator(f'#jobs li[data-job-id="{job_id}"]').inner_text()
    page.screenshot(path=str(shots / "command-center.png"), full_page=True)


def test_a_link_to_an_unknown_job_says_no_such_job_until_the_job_starts(
    page: Page, sites: Sites, tmp_path: Path
) -> None:
    serve = sites.chimera
    page.goto(f"{serve.base}/jobs/does-not-exist")
    page.wait_for_selector("#job-missing:not([hidden])")
    missing = page.inner_text("#job-missing")
    assert "No such job" in missing and "does-not-exist" in missing
    assert page.locator("#job-missing a[href='/']").is_visible()
    assert "Waiting for this job to start" not in page.inner_text("main")
    assert page.locator("#cancel").is_hidden()
    assert page.locator("#connection").is_hidden()  # no "Live" pill
    assert page.inner_text("#crumb-job") == "Job does-not-exist"  # the whole id
    assert page.title() == "Chimera · no such job"
    page.screenshot(path=str(screenshot_dir(tmp_path) / "job-missing.png"), full_page=True)
    # The page still waits on the id: a job created with it now shows (a link may be
    # handed out before its job is created).
    page.goto(f"{serve.base}/jobs/turns-up")
    page.wait_for_selector("#job-missing:not([hidden])")
    create_job(serve, "turns-up", "A pricing table with three tiers")
    wait_attr(page, "#job", "data-job-status", ("running", "succeeded"))
    assert page.locator("#job-missing").is_hidden()
    assert page.locator("#connection").is_visible()
    wait_attr(page, "#job", "data-job-status", "succeeded")
    # The link goes back to the list of jobs.
    page.goto(f"{serve.base}/jobs/does-not-exist")
    page.click("#job-missing a[href='/']")
    page.wait_for_selector("form#submit")
    assert page.evaluate("location.pathname") == "/"


def test_the_breadcrumb_shows_the_briefs_first_words_and_the_whole_id_on_hover(
    page: Page, sites: Sites, tmp_path: Path
) -> None:
    job_id = "breadcrumb-0123456789abcdef"  # longer than the 8 characters it was cut to
    create_job(sites.chimera, job_id, GUIDE_BRIEF)
    page.goto(f"{sites.chimera.base}/jobs/{job_id}")
    page.wait_for_selector("#crumb-job.words:not([hidden])")
    crumb = page.locator("#crumb-job")
    assert crumb.inner_text() == "Create a login form with email and…"
    assert crumb.get_attribute("title") == job_id
    assert page.locator("#job-missing").is_hidden()
    assert page.locator(f'#job[data-job-id="{job_id}"] .eyebrow code').inner_text() == job_id
    page.screenshot(path=str(screenshot_dir(tmp_path) / "job-crumb.png"))


def test_recent_jobs_update_live(page: Page, sites: Sites) -> None:
    page.goto(f"{sites.chimera.base}/")
    page.wait_for_selector("#jobs-status:has-text('updating live')")
    create_job(sites.chimera, "listed-live", "A pricing table with three tiers")
    item = page.wait_for_selector('#jobs li[data-job-id="listed-live"]')
    assert item is not None and "A pricing table with three tiers" in item.inner_text()
    page.wait_for_selector('#jobs li[data-job-id="listed-live"][data-state="succeeded"]')


def test_markup_in_a_brief_is_text_and_runs_no_script(page: Page, sites: Sites) -> None:
    brief = (
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
        "<b>bold</b> a signup form"
    )
    page.goto(f"{sites.chimera.base}/")
    page.fill("form#submit textarea[name=brief]", brief)
    page.click("form#submit button[type=submit]")
    wait_attr(page, "#job", "data-job-status", "succeeded")
    assert page.locator("h1.brief").inner_text() == brief
    # The simulated teams quote the brief in their thoughts: text there too.
    assert any("<script>" in t for t in page.locator(".thought p").all_inner_texts())
    page.go_back()
    page.wait_for_selector("#jobs li[data-state=succeeded]")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("main img, main script, main b").count() == 0


FOLDING = """async () => {
  const { emptyJob, applyEvent, applySnapshot } = await import("/static/chimera.js");
  const at = "2025-12-01T10:00:00.000Z";
  const thought = (n) => ({ id: `t${n}`, text: `thought ${n}`, timestamp: at });
  const event = (seq, n) => (
    { type: "thought_added", team: "google", seq, data: { ...thought(n), team: "google" } });
  const snap = (seq, ns, count) => ({
    job_id: "j", brief: "b", state: "running", last_sequence: seq,
    teams: [{ team: "google", status: "thinking", thoughts: ns.map(thought),
              thought_count: count }],
  });
  const ids = (job) => job.teams.google.thoughts.map((t) => t.id).join(" ");
  const job = emptyJob("j");
  const out = {};
  out.events = [1, 2, 2].map((n) => applyEvent(job, event(n, n)));
  out.afterEvents = ids(job);
  out.older = applySnapshot(job, snap(1, [1], 1));
  out.latest = applySnapshot(job, snap(4, [2, 3, 4], 4));  // the latest 3 of 4
  out.afterLatest = ids(job);
  out.gap = applySnapshot(job, snap(9, [7, 8, 9], 9));  // 5 and 6 missing here
  out.afterGap = ids(job);
  out.full = applySnapshot(job, snap(9, [1, 2, 3, 4, 5, 6, 7, 8, 9], 9));
  out.afterFull = ids(job);
  out.replayed = applyEvent(job, event(3, 3));
  return out;
}"""


def test_events_and_snapshots_fold_into_one_model_each_thought_once(
    page: Page, sites: Sites
) -> None:
    """chimera.js's folding, run in the browser on the module the server serves."""
    page.goto(f"{sites.chimera.base}/")
    assert page.evaluate(FOLDING) == {
        "events": [True, True, False],  # a seq seen before changes nothing
        "afterEvents": "t1 t2",
        "older": False,
        "latest": True,
        "afterLatest": "t1 t2 t3 t4",
        "gap": "partial",  # left as it was: ask for view=full
        "afterGap": "t1 t2 t3 t4",
        "full": True,
        "afterFull": "t1 t2 t3 t4 t5 t6 t7 t8 t9",
        "replayed": False,
    }


# -- when the WebSocket is not there ------------------------------------------------------------

EPOCHS = """async () => {
  const { emptyJob, applyEvent, applySnapshot, webSocketUrl } = await import("/static/chimera.js");
  const snap = (seq, epoch, brief) => ({
    job_id: "j", brief, state: "running", last_sequence: seq, epoch, teams: [],
  });
  const job = emptyJob("j");
  const out = {};
  out.first = applySnapshot(job, snap(3, "aaaa", "a login form"));
  out.epoch = job.epoch;
  out.url = webSocketUrl("http://h:1", "j", job.last_sequence, job.epoch);
  out.fresh = webSocketUrl("http://h:1", "j", 0, job.epoch);
  // Another lifetime of the store: the same id, another job; not folded in.
  out.other = applySnapshot(job, snap(9, "bbbb", "a todo list"));
  out.after = [job.brief, job.last_sequence, job.epoch];
  out.event = applyEvent(job, { type: "status_change", seq: 4, data: { status: "running" } });
  out.same = applySnapshot(job, snap(9, "aaaa", "a login form"));
  return out;
}"""


def test_a_position_is_seq_and_epoch_and_another_epochs_snapshot_is_not_folded(
    page: Page, sites: Sites
) -> None:
    page.goto(f"{sites.chimera.base}/")
    assert page.evaluate(EPOCHS) == {
        "first": True,
        "epoch": "aaaa",
        "url": "ws://h:1/ws/orchestrate/j?since=3&epoch=aaaa",
        "fresh": "ws://h:1/ws/orchestrate/j",  # starting over: no position to check
        "other": False,
        "after": ["a login form", 3, "aaaa"],
        "event": True,
        "same": True,
    }


def test_a_server_back_on_an_empty_database_is_never_spliced_onto_the_page(
    page: Page, tmp_path: Path
) -> None:
    """The page follows "reused" (a login form); the server dies and comes back on a new
    database where "reused" is a todo list. The page resumes with its old {seq, epoch},
    is told history is gone (4410), and starts over: it shows the todo list alone."""
    urls: list[str] = []
    blocked = False

    def route(ws: WebSocketRoute) -> None:
        urls.append(ws.url)
        if blocked:
            ws.close(code=1011)  # not yet: the new "reused" is not created
        else:
            ws.connect_to_server()

    page.route_web_socket(WS_ROUTE, route)
    first = start_serve(tmp_path, "first", "--sim-delay", "0.4", ws_port=free_port())
    try:
        page.goto(f"{first.base}/jobs/reused")
        wait_attr(page, "#connection", "data-connection-state", "connected")
        create_job(first, "reused", "a login form")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-thought-id]').length >= 2", timeout=30_000
        )
        old_epoch = snapshot_epoch(first, "reused")
        blocked = True
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        wait_attr(page, "#connection", "data-connection-state", ("reconnecting", "polling"))
    finally:
        first.stop()
    resumed_from = len(urls)
    second = start_serve(tmp_path, "second", "--sim-delay", "0.4", ws_port=first.ws_port)
    try:
        create_job(second, "reused", "a todo list")
        new_epoch = snapshot_epoch(second, "reused")
        assert new_epoch != old_epoch
        blocked = False
        wait_attr(page, "#job", "data-job-status", "succeeded")
        wait_attr(page, "#connection", "data-connection-state", "closed")
        assert page.locator("h1.brief").inner_text() == "a todo list"
        assert page_thoughts(page) == server_thoughts(second, "reused")
        codes = page.locator("[data-code]").all_inner_texts()
        assert all("TodoList" in c and "LoginForm" not in c for c in codes), codes
        assert "LoginForm" not in page.inner_text("main")
        after = urls[resumed_from:]
        # Its resumes carried the old position's epoch until the 4410 sent it back to
        # the snapshot, then (if the job was still running) the new one: never mixed.
        assert re.search(rf"\?since=[1-9]\d*&epoch={old_epoch}$", after[0]), after
        epochs = [m[1] if (m := re.search(r"&epoch=(\w+)$", u)) else "" for u in after]
        olds = epochs.index(new_epoch) if new_epoch in epochs else len(epochs)
        assert set(epochs[:olds]) == {old_epoch} and set(epochs[olds:]) <= {new_epoch}, after
    finally:
        second.stop()


def test_websockets_blocked_polls_snapshots_to_the_end(page: Page, sites: Sites) -> None:
    serve = sites.chimera
    page.route_web_socket(WS_ROUTE, lambda route: route.close(code=1011))
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{serve.base}/jobs/polled")
    wait_attr(page, "#connection", "data-connection-state", "polling")
    assert "[CommandCenter] WebSocket disconnected, falling back to polling" in console
    create_job(serve, "polled")
    wait_attr(page, "#job", "data-job-status", "succeeded")
    wait_attr(page, "#connection", "data-connection-state", "closed")
    assert page_thoughts(page) == server_thoughts(serve, "polled")
    assert "connected" not in states(page)
    assert page.locator('[data-team="google"] [data-code]').inner_text().strip()


def test_sigkill_mid_job_then_restart_shows_the_job_failed_with_every_thought_once(
    page: Page, tmp_path: Path
) -> None:
    db = tmp_path / "killed.db"
    first = start_serve(tmp_path, "first", "--sim-delay", "0.4", db=db, ws_port=free_port())
    try:
        page.goto(f"{first.base}/jobs/killed")
        wait_attr(page, "#connection", "data-connection-state", "connected")
        create_job(first, "killed")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-thought-id]').length >= 2", timeout=30_000
        )
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        wait_attr(page, "#connection", "data-connection-state", ("reconnecting", "offline"))
        assert page.get_attribute("#job", "data-job-status") == "running"
        label = page.locator("#connection").inner_text()
        assert re.search(r"attempt \d of 5", label) or "Offline" in label, label
    finally:
        first.stop()
    second = start_serve(tmp_path, "second", db=db, ws_port=first.ws_port)
    try:
        wait_attr(page, "#job", "data-job-status", "failed")
        wait_attr(page, "#connection", "data-connection-state", "closed")
        assert page_thoughts(page) == server_thoughts(second, "killed")
        seen = states(page)
        assert seen.index("connected") < seen.index("reconnecting") < seen.index("closed"), seen
        errors = page.locator(".team-error:visible").all_inner_texts()
        assert errors and all("interrupted: server stopped" in e for e in errors)
    finally:
        second.stop()


def test_pings_every_30_s_and_retries_5_times_2_s_apart_then_in_the_background(
    page: Page, sites: Sites
) -> None:
    """With the page's clock in the test's hands: no waiting 30 s for a ping."""
    page.clock.install()
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(str(payload))))
    page.goto(f"{sites.chimera.base}/jobs/waiting-for-pings")  # an unknown job: the socket waits
    wait_attr(page, "#connection", "data-connection-state", "connected")
    page.clock.run_for(29_000)
    assert sent == []
    page.clock.run_for(1_000)
    deadline = time.monotonic() + 10
    while not sent:  # the frame event reaches the test while Playwright is called
        assert time.monotonic() < deadline, "no ping after 30 s"
        page.wait_for_timeout(20)
    assert [json.loads(frame) for frame in sent] == [{"type": "ping"}]

    # A page whose sockets are refused: 5 attempts 2 s apart, then one every 5 s, while
    # it polls. The clock is paused: only run_for moves it.
    attempts: list[str] = []

    def refuse(route: WebSocketRoute) -> None:
        attempts.append(route.url)
        route.close(code=1011)

    refused = page.context.new_page()
    refused.clock.install()
    refused.clock.pause_at(time.time() + 60)
    refused.route_web_socket(WS_ROUTE, refuse)
    refused.goto(f"{sites.chimera.base}/jobs/waiting-for-pings")
    wait_attr_paused(refused, "#connection", "data-attempt", "1")
    refused.clock.run_for(1)  # the first poll
    wait_attr_paused(refused, "#connection", "data-connection-state", "polling")
    for attempt, delay in [(2, 2000), (3, 2000), (4, 2000), (5, 2000), (6, 2000), (7, 5000)]:
        refused.clock.run_for(delay - 2)
        assert len(attempts) == attempt - 1
        refused.clock.run_for(2)  # (1 ms is the first poll's, run above)
        wait_attr_paused(refused, "#connection", "data-attempt", str(attempt))
        assert len(attempts) == attempt
    assert connection_state(refused) == "polling"


def cut_after_thoughts(page: Page, code: int, thoughts: int = 3) -> list[str]:
    """Routes the page's job sockets through the test: the first one is closed with
    ``code`` right after ``thoughts`` thoughts, as the server would; returns the URLs the
    page opened."""
    urls: list[str] = []

    def handle(route: WebSocketRoute) -> None:
        urls.append(route.url)
        server = route.connect_to_server()
        seen = 0

        def to_page(message: str | bytes) -> None:
            nonlocal seen
            if len(urls) == 1 and seen >= thoughts:
                return  # cut: nothing more on this socket
            route.send(message)
            if '"thought_added"' in str(message):
                seen += 1
                if len(urls) == 1 and seen == thoughts:
                    route.close(code=code, reason="cut by the test")
                    server.close()

        server.on_message(to_page)

    page.route_web_socket(WS_ROUTE, handle)
    return urls


@pytest.mark.parametrize("code", [4008, 4410])
def test_close_codes_too_slow_resumes_at_once_history_gone_reloads_the_snapshot(
    page: Page, sites: Sites, code: int
) -> None:
    serve = sites.chimera
    job_id = f"closed-{code}"
    urls = cut_after_thoughts(page, code)
    page.goto(f"{serve.base}/jobs/{job_id}")
    wait_attr(page, "#connection", "data-connection-state", "connected")
    create_job(serve, job_id)
    wait_attr(page, "#job", "data-job-status", "succeeded")
    wait_attr(page, "#connection", "data-connection-state", "closed")
    assert page_thoughts(page) == server_thoughts(serve, job_id)
    # One cut, one resume from where the page was (4008), or from the snapshot (4410),
    # with the epoch of that position.
    epoch = snapshot_epoch(serve, job_id)
    assert len(urls) == 2 and re.search(rf"\?since=[1-9]\d*&epoch={epoch}$", urls[1]), urls
    assert "reconnecting" not in states(page) and "polling" not in states(page)


# -- another origin ------------------------------------------------------------------------------

def test_another_origin_imports_chimera_js_and_follows_a_job_by_websocket(
    page: Page, sites: Sites
) -> None:
    serve = sites.chimera
    page.goto(f"{sites.other}/follow.html?backend={serve.base}&job=other-ws")
    wait_attr(page, "body", "data-connection", "connected")
    create_job(serve, "other-ws")
    wait_attr(page, "body", "data-connection", "closed")
    assert page.get_attribute("body", "data-job-status") == "succeeded"
    assert json.loads(page.inner_text("#out")) == server_thoughts(serve, "other-ws")
    assert "polling" not in (page.get_attribute("body", "data-states") or "")


def test_another_origin_follows_a_job_by_polling_when_websockets_are_blocked(
    page: Page, sites: Sites
) -> None:
    serve = sites.chimera
    page.route_web_socket(WS_ROUTE, lambda route: route.close(code=1011))
    page.goto(f"{sites.other}/follow.html?backend={serve.base}&job=other-poll")
    wait_attr(page, "body", "data-connection", "polling")
    create_job(serve, "other-poll")
    wait_attr(page, "body", "data-connection", "closed")
    assert page.get_attribute("body", "data-job-status") == "succeeded"
    assert json.loads(page.inner_text("#out")) == server_thoughts(serve, "other-poll")
    assert "connected" not in (page.get_attribute("body", "data-states") or "").split()


def test_an_origin_not_allowed_can_neither_poll_nor_submit(page: Page, sites: Sites) -> None:
    serve = sites.chimera
    create_job(serve, "not-yours")
    page.goto(f"{sites.foreign}/probe.html?backend={serve.base}&job=not-yours&submit=foreign-1")
    wait_attr(page, "body", "data-ws-closed", ("1006",))
    assert page.get_attribute("body", "data-poll") == "blocked TypeError"
    assert page.get_attribute("body", "data-ws") is None  # never opened
    assert http_status(f"{serve.base}/api/jobs/foreign-1") == 404  # nothing was created
    # The same page from the allowed origin can read the snapshot (so the probe works).
    page.goto(f"{sites.other}/probe.html?backend={serve.base}&job=not-yours&submit=foreign-2")
    wait_attr(page, "body", "data-poll", "read 200")


# -- auth ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("secured")
    serve = start_serve(tmp, "secured", "--sim-delay", "0.5", "--jwt-secret", SECRET)
    yield serve
    serve.stop()


def test_no_token_gets_a_prompt_and_a_pasted_token_opens_the_command_center(
    page: Page, secured: Serve
) -> None:
    page.goto(f"{secured.base}/")
    page.wait_for_selector("#auth:not([hidden])")
    assert "needs a token" in page.inner_text("#auth-message")
    assert page.locator("#command-center").is_hidden()
    page.fill("#token-form input[name=token]", token("alice"))
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#jobs-status:has-text('updating live')")
    assert page.locator("#auth").is_hidden()


def test_expired_or_wrong_token_says_so_on_the_page(page: Page, secured: Serve) -> None:
    expired = token("alice", now=time.time() - 7200, ttl=60)
    page.goto(f"{secured.base}/jobs/some-job#token={expired}")
    page.wait_for_selector("#auth:not([hidden])")
    message = page.inner_text("#auth-message")
    assert "refused this token" in message and "expired" in message, message
    page.goto(f"{secured.base}/#token=not-a-token")
    page.wait_for_selector("#auth:not([hidden])")
    assert "refused this token" in page.inner_text("#auth-message")


def test_viewer_link_streams_the_job_read_only_with_auth_on(page: Page, secured: Serve) -> None:
    owner = token("alice")
    link = subprocess.run(
        [sys.executable, "-m", "chimera", "token", "--sub", "viewer", "--scope", "read",
         "--job", "viewed", "--link", "--url", secured.base],
        env={**os.environ, "CHIMERA_JWT_SECRET": SECRET}, capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    assert link.startswith(f"{secured.base}/jobs/viewed#token=")
    # The page opens before the job exists (a one-job token may wait for it), so it is
    # connected while the job runs, however slow the machine: created before, the job
    # could finish before the page loaded and "connected" last too short to see.
    page.goto(link)
    wait_attr(page, "#connection", "data-connection-state", "connected")
    assert page.url == f"{secured.base}/jobs/viewed"  # the token left the address bar
    create_job(secured, "viewed", tok=owner)
    wait_attr(page, "#job", "data-job-status", "running")  # for seconds at --sim-delay 0.5
    assert page.locator("#cancel").is_hidden()  # read only
    wait_attr(page, "#job", "data-job-status", "succeeded")
    wait_attr(page, "#connection", "data-connection-state", "closed")
    assert page_thoughts(page) == server_thoughts(secured, "viewed", owner)


def test_a_token_expiring_on_an_open_page_asks_for_a_new_one_without_reconnecting(
    page: Page, secured: Serve
) -> None:
    # A viewer token for a job that does not exist yet (its socket waits for it), which
    # the server stops accepting 4 s from now (at most: exp is whole seconds).
    expiring = token("viewer", scope="read", job="expiring",
                     now=time.time() - LEEWAY_SECONDS, ttl=4)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{secured.base}/jobs/expiring#token={expiring}")
    page.wait_for_selector("#auth:not([hidden])", timeout=20_000)
    # Told by the 4401 itself (not by a poll refused afterwards), and no retry.
    assert "Your token expired" in page.inner_text("#auth-message")
    assert "connected" in states(page)
    assert "reconnecting" not in states(page) and "polling" not in states(page)
    assert len(sockets) == 1


def test_cancel_button_with_a_cancel_token_cancels_the_running_job(
    page: Page, secured: Serve
) -> None:
    # Submitted from the form with a token that may submit and cancel.
    page.goto(f"{secured.base}/#token={token('alice')}")
    page.fill("form#submit textarea[name=brief]", "A long dashboard with many charts")
    page.click("form#submit button[type=submit]")
    wait_attr(page, "#connection", "data-connection-state", "connected")
    page.wait_for_selector('[data-team="anthropic"][data-status="thinking"]')
    page.locator("#cancel").click(force=True)  # the state badge beside it may change width
    wait_attr(page, "#job", "data-job-status", "cancelled")
    assert page.locator("#cancel").is_hidden()
    statuses = page.eval_on_selector_all("[data-team]", "ps => ps.map((p) => p.dataset.status)")
    assert statuses == ["cancelled", "cancelled"]
