"""The course website (tools/build_site.py), in a real browser.

The tests build the whole site of this repository into a temporary folder
(every notebook must get a page with all its stored figures), serve it with
``http.server`` on 127.0.0.1 and open pages in headless Chromium (Debian's
``chromium``; skipped with a message when it is not installed; .ci/run
installs it): the index, README and first two notebook pages. Chromium is
driven over the DevTools protocol through ``--remote-debugging-pipe`` (JSON
messages on file descriptors 3 and 4): no websocket, no extra Python package.
For each page they check that every <img> loaded (naturalWidth > 0), that the
maths is typeset (MathJax found no error) or at least readable as raw TeX,
that every local link answers HTTP 200, and that the console shows no error
(JavaScript exceptions, console.error, failed resource loads).

The other tests check the builder itself on small synthetic notebooks.
"""
import fcntl
import functools
import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402
import make_nav  # noqa: E402

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGE_TIMEOUT = 30.0
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def find_chromium():
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


# ------------------------------------------------------------------ a tiny DevTools client

class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the child)."""

    def __init__(self, executable, profile_dir):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Move the child's ends above 10 so that dup2 onto 3 and 4 cannot clobber them.
        child_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def attach_pipe():  # runs in the child, before exec
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=attach_pipe, close_fds=False)
        os.close(child_in)
        os.close(child_out)
        self._write = to_child_w
        self._read = from_child_r
        self._next_id = 0
        self._replies = {}
        self._events = queue.Queue()
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._replies[None] = "closed"
                    self._lock.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        self._replies[message["id"]] = message
                        self._lock.notify_all()
                else:
                    self._events.put(message)

    def send(self, method, params=None, session=None, timeout=PAGE_TIMEOUT):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._next_id not in self._replies:
                if None in self._replies:
                    raise RuntimeError(f"Chromium closed the DevTools pipe during {method}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from Chromium to {method} in {timeout} s")
                self._lock.wait(left)
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self):
        """Every event received so far (and forgets them)."""
        found = []
        while True:
            try:
                found.append(self._events.get_nowait())
            except queue.Empty:
                return found

    def wait_event(self, method, session, timeout=PAGE_TIMEOUT):
        """Wait for one event; returns it with every event seen before it."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} from Chromium in {timeout} s")
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return seen

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._write, self._read):
            try:
                os.close(fd)
            except OSError:
                pass


PROBE = r"""
(async () => {
  if (window.MathJax && MathJax.Hub && MathJax.Hub.Queue) {
    await new Promise(done => MathJax.Hub.Queue(done));
  }
  const text = document.body.innerText;
  return {
    title: document.title,
    images: [...document.images].map(i => ({src: i.src.slice(0, 80), complete: i.complete,
                                            width: i.naturalWidth})),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    mathjax: !!(window.MathJax && MathJax.Hub),
    typeset: document.querySelectorAll(".MathJax, .MathJax_CHTML, .MathJax_SVG, mjx-container").length,
    mathErrors: document.querySelectorAll(".MathJax_Error, merror").length
                + (text.includes("Math Processing Error") ? 1 : 0),
    rawTex: (text.match(/\$[^$\n]+\$/g) || []).length,
    navs: document.querySelectorAll("nav.site-nav").length,
    headings: [...document.querySelectorAll("h1")].map(h => h.textContent.replace("¶", "").trim()),
  };
})()
"""


def open_page(browser, url):
    """Load ``url`` in a fresh tab; returns (probe result, console problems)."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.events()
        browser.send("Page.navigate", {"url": url}, session=session)
        seen = browser.wait_event("Page.loadEventFired", session)
        result = browser.send("Runtime.evaluate", {"expression": PROBE, "awaitPromise": True,
                                                   "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise AssertionError(f"probe failed on {url}: {result['exceptionDetails']}")
        time.sleep(0.2)   # let late console messages arrive
        seen += browser.events()
        return result["result"]["value"], console_problems(seen, session)
    finally:
        browser.send("Target.closeTarget", {"targetId": target})


def console_problems(events, session):
    problems = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                         for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            problems.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.responseReceived" and params.get("response", {}).get("status", 200) >= 400:
            response = params["response"]
            problems.append(f"HTTP {response['status']}: {response['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"load failed: {params.get('errorText')}")
    return problems


# ------------------------------------------------------------------ fixtures

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):   # a tab closed mid-transfer: not a failure
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium not found (looked for /usr/bin/chromium): the browser tests of the site are skipped. "
                    "Install it with `apt-get install chromium` (Debian); .ci/run does.")
    return path


@pytest.fixture(scope="module")
def real_site(tmp_path_factory):
    """The whole site of this repository, built into a temporary folder (about 10 s)."""
    if len(make_nav.series_notebooks(ROOT / "notebooks")) < 2:
        pytest.skip("fewer than two numbered notebooks")
    out = tmp_path_factory.mktemp("site") / "_site"
    builder = build_site.build_site(ROOT, out, log=open(os.devnull, "w"))
    return out, builder


@pytest.fixture(scope="module")
def server(real_site):
    out, _ = real_site
    handler = functools.partial(_QuietHandler, directory=str(out))
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    instance = Chromium(chromium, tmp_path_factory.mktemp("chromium-profile"))
    try:
        instance.send("Browser.getVersion")
    except Exception as exc:
        instance.close()
        pytest.fail(f"Chromium at {chromium} does not answer on the DevTools pipe: {exc}")
    yield instance
    instance.close()


def http_status(url):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def check_page(browser, server, path, offline_cdn=False):
    """Open ``path`` and check it. With ``offline_cdn`` (no local MathJax: the pages name a CDN,
    which this machine may not reach) a failed load of MathJax is expected, not an error."""
    url = server + path
    page, problems = open_page(browser, url)
    if offline_cdn:
        host = urlsplit(build_site.MATHJAX_CDN).netloc
        problems = [p for p in problems if host not in p and not p.startswith("load failed: net::ERR_")]
    assert problems == [], f"{path}: console errors: {problems}"
    broken = [i for i in page["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == [], f"{path}: images that did not load: {broken}"
    if page["mathjax"]:
        assert page["mathErrors"] == 0, f"{path}: MathJax reported {page['mathErrors']} errors"
    local = sorted({urldefrag(link)[0] for link in page["links"] if link.startswith(server)})
    dead = [(link, status) for link in local if (status := http_status(link)) != 200]
    assert dead == [], f"{path}: links that do not resolve: {dead}"
    return page, local


# ------------------------------------------------------------------ browser tests

def test_notebook_pages_render(browser, server, real_site):
    out, builder = real_site
    first, second = builder.infos[:2]
    for k, info in enumerate((first, second)):
        path = f"notebooks/{Path(info['name']).with_suffix('.html')}"
        page, links = check_page(browser, server, path, offline_cdn=builder.mathjax_dir is None)
        nb = nbformat.read(str(out / "notebooks" / info["name"]), as_version=4)
        figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert len(page["images"]) == figures, f"{path}: {len(page['images'])} <img>, {figures} stored figures"
        assert page["navs"] == 2 and page["headings"][:1] and info["number"] in page["headings"][0]
        assert server + "index.html" in links
        assert server + f"notebooks/{info['name']}" in links          # the download link
        other = (second if k == 0 else first)["name"].replace(".ipynb", ".html")
        assert server + f"notebooks/{other}" in links                 # previous / next
        if page["mathjax"]:
            has_tex = any("$" in c.source for c in nb.cells if c.cell_type == "markdown")
            assert page["typeset"] > 0 or not has_tex, f"{path}: maths not typeset"
        else:  # MathJax unavailable (a CDN offline): the raw TeX must at least be there to read
            assert page["rawTex"] > 0


def test_index_page_renders(browser, server, real_site):
    _, builder = real_site
    page, links = check_page(browser, server, "index.html", offline_cdn=builder.mathjax_dir is None)
    assert page["headings"] == [make_nav.SERIES_TITLE]
    for info in builder.infos:
        assert server + f"notebooks/{info['name'].replace('.ipynb', '.html')}" in links
    assert server + "README.html" in links


def test_readme_page_renders(browser, server, real_site):
    page, _ = check_page(browser, server, "README.html", offline_cdn=real_site[1].mathjax_dir is None)
    assert page["headings"] == [make_nav.SERIES_TITLE]


def test_every_notebook_has_a_page_with_all_its_figures(real_site):
    out, builder = real_site
    assert [info["name"] for info in builder.infos] == [p.name for p in make_nav.series_notebooks(ROOT / "notebooks")]
    for info in builder.infos:
        nb = nbformat.read(str(out / "notebooks" / info["name"]), as_version=4)   # the download: the stored file
        figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        page = (out / "notebooks" / info["name"]).with_suffix(".html").read_text(encoding="utf-8")
        assert page.count('src="data:image/png;base64,') == figures, info["name"]
    assert builder.warnings == [], "links the site cannot resolve:\n" + "\n".join(builder.warnings)
    assert (out / build_site.MARKER).is_file()
    if builder.mathjax_dir is not None:
        assert (out / "mathjax" / "MathJax.js").is_file()


# ------------------------------------------------------------------ the builder, on synthetic notebooks

def _notebook(title, cells):
    nb = new_notebook(metadata={"kernelspec": dict(make_nav.KERNELSPEC)})
    nb.cells = [new_markdown_cell(f"# {title}\n\nThe overview of {title}.")] + cells
    return nb


@pytest.fixture
def tiny_repo(tmp_path):
    repo = tmp_path / "repo"
    nbdir = repo / "notebooks"
    nbdir.mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "docs" / "NOTES.md").write_text("# Notes\n\nBack to [the README](../README.md).\n", encoding="utf-8")
    (repo / "tool.py").write_text("print('hello')\n", encoding="utf-8")
    (repo / "README.md").write_text(
        "# Tiny course\n\nAn *introduction* with $x^2$.\n\n## Quick start\n\nNot on the index.\n\n"
        f"{make_nav.README_START}\n{make_nav.README_END}\n", encoding="utf-8")
    solution = new_code_cell("# NBVAL_IGNORE_OUTPUT\nanswer = 42", execution_count=2,
                             metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}})
    first = _notebook("First `code` title", [
        new_markdown_cell("See [the second](02_second.ipynb#Part), [notes](../docs/NOTES.md), "
                          "[a tool](../tool.py), [a draft](10_draft.ipynb), [contents](00_contents.ipynb) "
                          "and [the web](https://example.org)."),
        new_code_cell("x = 1\nprint(x)", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="1\n"),
                               new_output("display_data", data={"image/png": PNG_1PX, "text/plain": "<Figure>"})]),
        new_markdown_cell("**Exercise.**", metadata={"tags": ["exercise"]}),
        solution,
        new_markdown_cell("Discussion.", metadata={"tags": ["solution"]}),
    ])
    second = _notebook("Second", [new_markdown_cell("## Part\n\nBack to [the first](01_first.ipynb).")])
    for name, nb in (("01_first.ipynb", first), ("02_second.ipynb", second)):
        (nbdir / name).write_text(nbformat.writes(nb), encoding="utf-8")
    make_nav.update(repo, out=open(os.devnull, "w"))
    return repo


def test_builder_pages_and_links(tiny_repo, tmp_path):
    out = tmp_path / "site"
    builder = build_site.build_site(tiny_repo, out, log=open(os.devnull, "w"))
    page = (out / "notebooks" / "01_first.html").read_text(encoding="utf-8")
    assert 'href="02_second.html#Part"' in page
    assert 'href="../docs/NOTES.html"' in page and 'href="../tool.py.html"' in page
    assert 'href="../index.html"' in page and 'href="https://example.org"' in page
    assert 'class="dead-link"' in page and "10_draft" not in re.sub(r'title="[^"]*"', "", page)
    assert any("10_draft.ipynb" in w for w in builder.warnings)
    assert "00_contents.ipynb" not in page                  # the navigation cells are not on the page
    assert page.count('<nav class="site-nav') == 2
    assert 'href="01_first.ipynb" download' in page
    assert "NBVAL_IGNORE_OUTPUT" not in page and "answer" in page
    assert page.count('<details class="solution">') == 1 and page.count("</details>") == 1
    details = page[page.index('<details class="solution">'):page.index("</details>")]
    assert "answer" in details and "Discussion." in details and "Exercise" not in details
    assert page.count("data:image/png;base64,") == 1
    assert "<code>code</code>" in page                       # the title's Markdown, in the navigation
    assert "cdnjs" not in page or builder.mathjax_dir is None

    index = (out / "index.html").read_text(encoding="utf-8")
    assert "Tiny course" in index and "introduction" in index and "Not on the index" not in index
    assert 'href="notebooks/01_first.html"' in index and 'href="notebooks/02_second.html"' in index
    assert "The overview of Second." in index
    assert (out / "docs" / "NOTES.html").is_file() and (out / "tool.py.html").is_file()
    assert 'href="../README.html"' in (out / "docs" / "NOTES.html").read_text(encoding="utf-8")
    assert (out / "README.html").is_file()
    assert (out / "notebooks" / "01_first.ipynb").read_bytes() == \
        (tiny_repo / "notebooks" / "01_first.ipynb").read_bytes()


def test_builder_is_idempotent_and_removes_stale_files(tiny_repo, tmp_path):
    out = tmp_path / "site"
    build_site.build_site(tiny_repo, out, log=open(os.devnull, "w"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    builder = build_site.SiteBuilder(tiny_repo).build()
    assert builder.write(out) == (0, 0)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (out / "stale.html").write_text("old", encoding="utf-8")
    (tiny_repo / "notebooks" / "02_second.ipynb").unlink()
    assert build_site.SiteBuilder(tiny_repo).build().write(out)[1] >= 2   # stale.html, 02's page and copy
    assert not (out / "stale.html").exists() and not (out / "notebooks" / "02_second.html").exists()


def test_builder_refuses_a_foreign_folder(tiny_repo, tmp_path):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me", encoding="utf-8")
    with pytest.raises(SystemExit, match="not made by this tool"):
        build_site.build_site(tiny_repo, foreign, log=open(os.devnull, "w"))
    with pytest.raises(SystemExit, match="repository itself"):
        build_site.build_site(tiny_repo, tiny_repo, log=open(os.devnull, "w"))
    assert (foreign / "thesis.tex").read_text(encoding="utf-8") == "keep me"


def test_readme_intro():
    text = "# T\n\nIntro.\n\n## Quick start\n\nmore\n"
    assert build_site.readme_intro(text) == "# T\n\nIntro.\n"


def test_links_resolve_against_the_page(tiny_repo):
    builder = build_site.SiteBuilder(tiny_repo)
    page = build_site.PurePosixPath("notebooks/01_first.ipynb")
    site = build_site.PurePosixPath("notebooks/01_first.html")
    assert builder.resolve("02_second.ipynb", page, site) == "02_second.html"
    assert builder.resolve("#anchor", page, site) == "#anchor"
    assert builder.resolve("../../outside.md", page, site) is None
    assert builder.resolve("../docs", page, site) is None           # a folder without a README
    assert urlsplit(builder.resolve("https://x.org/a.ipynb", page, site)).netloc == "x.org"
    assert urljoin("http://h/notebooks/01_first.html", builder.resolve("../docs/NOTES.md", page, site)) == \
        "http://h/docs/NOTES.html"
