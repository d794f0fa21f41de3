#!/usr/bin/env python3
"""Build the course website: static HTML pages from the stored notebooks.

Usage::

    python tools/build_site.py                 # writes _site/
    python tools/build_site.py --out /tmp/site
    python -m http.server -d _site             # then open http://localhost:8000

Nothing is executed: the pages show the outputs stored in the notebooks,
the same ones nbval checks. Nothing is fetched either: the build and the
pages work offline (see *Maths* below).

What ``_site/`` receives:

* ``index.html``: the README's introduction (the text before its first
  ``## `` heading) and the contents table, the very table tools/make_nav.py
  writes into the README (its functions are reused here);
* ``notebooks/NN_name.html`` for every numbered notebook: prose, maths,
  code, every stored figure (PNG embedded in the page) and text output, a
  previous | contents | next bar at the top and bottom, and a link to
  download the notebook, copied beside the page as ``notebooks/NN_name.ipynb``.
  The notebook's own navigation cells (metadata ``cnnlib_nav``) are left
  out, since the page has its own; cells tagged ``solution`` are kept,
  collapsed in a ``<details>`` element; ``# NBVAL_...`` marker lines (test
  instructions) are dropped from the code shown;
* the repository files the pages link to, so that no link 404s: Markdown
  files rendered (``../benchmarks/README.md`` -> ``benchmarks/README.html``,
  the README itself -> ``README.html``), other text files as highlighted
  pages (``../cnnlib/gradcheck.py`` -> ``cnnlib/gradcheck.py.html``),
  images and small binary files copied. Links between notebooks point to
  their pages, ``00_contents.ipynb`` to ``index.html``. A link whose target
  does not exist (a notebook still being written) becomes plain text, and
  the build prints a warning naming it;
* ``static/``: the JupyterLab stylesheet of nbconvert's ``lab`` template and
  the site's own few rules; ``mathjax/``: see below.

The site mirrors the repository's layout (pages of notebooks/ under
``notebooks/``), so the notebooks' relative links keep their meaning.

Maths: MathJax 2.7, copied from the ``jupyter-server-mathjax`` package (a
Jupyter project that ships MathJax's files; listed in requirements.txt) into
``_site/mathjax/``, so pages typeset their maths with no network at all. If
that package is missing the pages load MathJax from a CDN instead (a note
says so); without network the raw TeX (``$\\sigma(z)$``) stays on the page,
which is still readable.

Why nbconvert (with a template kept in this file) and not Jupyter Book:
nbconvert is already a dependency (tools/student_edition.py uses it), so the
site needs no extra package, no Sphinx configuration and no network at build
time; Jupyter Book 1.x would add Sphinx, MyST-NB and a theme (dozens of
packages) for a series of ten pages. nbconvert's ``lab`` template renders
cells exactly as JupyterLab shows them.

The build is idempotent: a second run writes nothing. The output folder
holds a marker file (``.cnnlib-site``); files there that the build no longer
produces are deleted, and the build refuses to write into a non-empty folder
without that marker, so ``--out`` cannot wipe anything else.
"""
import argparse
import copy
import html
import os
import posixpath
import re
import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html_mistune
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nav  # noqa: E402  (a sibling script, not a package)

ROOT = make_nav.ROOT
DEFAULT_OUT = "_site"
MARKER = ".cnnlib-site"
NB_DIR = PurePosixPath(make_nav.NOTEBOOK_DIR)
SOLUTION = "solution"
NBVAL_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_[A-Z_]+[ \t]*\n?", re.MULTILINE)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
MAX_COPY_BYTES = 5_000_000   # a link to a bigger file (a dataset) becomes plain text
MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js?config=TeX-AMS_CHTML-full,Safe"
# Parts of jupyter-server-mathjax's MathJax that the pages never load (other
# output processors, translations, the accessibility explorer): 2 MB instead of 10.
MATHJAX_SKIP = ("localization/", "jax/output/SVG/")

MATHJAX_CONFIG = """\
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {extensions: ["AMSmath.js", "AMSsymbols.js", "noErrors.js", "noUndefined.js"],
        equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true},
               styles: {"@font-face": {src: "local('MathJax_Blank')"}}},
  CommonHTML: {linebreaks: {automatic: true}},
  %(native)s
  displayAlign: "center",
  messageStyle: "none"
});
</script>
<script src="%(url)s"></script>
"""
MATHJAX_LOCAL_CONFIG = "TeX-AMS-MML_HTMLorMML-full"   # the combined configuration the package ships
# Two font sources in it make Chromium log errors, which the browser test counts: the
# detection font MathJax_Blank (url('about:blank'), refused by CORS; above, "HTML-CSS"), and
# the NativeMML styles, which name TeX web fonts (fonts/HTML-CSS/TeX/otf) which the
# package does not ship; Chromium fetches one for the hidden MathML of screen readers
# (\\mathcal), a 404 and a console error. Point them at local fonts instead (no request).
MATHJAX_NATIVE_FONTS = "NativeMML: {styles: {" + ", ".join(
    f'"@font-face /*{i}*/": {{src: "local(\'{name}\')"}}'
    for i, name in enumerate(["MathJax_Caligraphic", "MathJax_Caligraphic", "MathJax_AMS", "MathJax_Script",
                              "MathJax_Fraktur", "MathJax_Fraktur"], start=1)) + "}},"

SITE_CSS = """\
/* cnnlib course site: a readable column, a navigation bar, collapsed solutions. */
body.jp-Notebook, body.site-page { margin: 0; padding: 0 1rem 2rem; background: var(--jp-layout-color0, #fff); }
main { max-width: 62rem; margin: 0 auto; }
body.site-page main { font-family: var(--jp-content-font-family, system-ui, sans-serif); line-height: 1.5; }
nav.site-nav { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; align-items: baseline;
  max-width: 62rem; margin: 0 auto; padding: .7rem 0; font-family: system-ui, sans-serif; font-size: .95rem;
  border-bottom: 1px solid #ddd; }
nav.site-nav.bottom { border-bottom: none; border-top: 1px solid #ddd; margin-top: 2rem; }
nav.site-nav a { text-decoration: none; color: #1a5fb4; }
nav.site-nav a:hover { text-decoration: underline; }
nav.site-nav .download { margin-left: auto; }
a.anchor-link { display: none; }
h1:hover > a.anchor-link, h2:hover > a.anchor-link, h3:hover > a.anchor-link { display: inline; padding-left: .3em;
  text-decoration: none; color: #999; }
details.solution { margin: .5rem 0; }
details.solution > summary { cursor: pointer; color: #1a5fb4; font-family: system-ui, sans-serif; padding: .2rem 0;
  padding-left: calc(var(--jp-cell-prompt-width, 64px) + 12px); }
.dead-link { border-bottom: 1px dotted #999; }
.jp-InputArea { overflow: hidden; }
.jp-InputArea-editor { overflow: hidden; }
.cm-editor.cm-s-jupyter .highlight pre { padding: var(--jp-code-padding) 4px; margin: 0; font-family: inherit;
  font-size: inherit; line-height: inherit; color: inherit; }
.jp-OutputArea-output pre { line-height: inherit; font-family: inherit; overflow-x: auto; }
.jp-InputArea-editor .highlight pre { overflow-x: auto; }  /* long lines scroll (phones) instead of being cut */
.jp-RenderedText pre { color: var(--jp-content-font-color1); font-size: var(--jp-code-font-size); }
.jp-Collapser { display: none; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
table.contents td:first-child { white-space: nowrap; }
pre.source { overflow-x: auto; padding: .8rem; background: #f7f7f7; border: 1px solid #e4e4e4; }
@media (max-width: 700px) {
  .jp-InputPrompt, .jp-OutputPrompt { display: none; }
  details.solution > summary { padding-left: 12px; }
  body.jp-Notebook, body.site-page { padding: 0 .5rem 2rem; }
}
@media print { nav.site-nav { display: none; } details.solution { display: block; } }
"""

# The notebook template: nbconvert's ``lab`` template with the site's
# stylesheets, MathJax, navigation and collapsed solutions. No require.js
# and no mermaid loader (both come from a CDN; no notebook needs them).
TEMPLATE_NAME = "cnnlib_site.html.j2"
NAV_TOP, NAV_BOTTOM = "<!--cnnlib-site:nav-top-->", "<!--cnnlib-site:nav-bottom-->"
TEMPLATE = """\
{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block notebook_css -%}
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{{ resources.site.root }}static/lab.css">
<link rel="stylesheet" href="{{ resources.site.root }}static/site.css">
{%- endblock notebook_css -%}
{%- block html_head_js_mathjax -%}
{{ resources.site.mathjax }}
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}
{{ super() }}
<!--cnnlib-site:nav-top-->
{%- endblock body_header -%}
{% block body_footer %}
<!--cnnlib-site:nav-bottom-->
{{ super() }}
{% endblock body_footer %}
{#- The code as nbconvert shows it, without passing pygments' own output through the HTML
    sanitizer (bleach): that took 40 % of the build and removes nothing from it. -#}
{% block input %}
<div class="jp-CodeMirrorEditor jp-Editor jp-InputArea-editor" data-type="inline">
     <div class="cm-editor cm-s-jupyter">
{{ cell.source | highlight_code(metadata=cell.metadata) }}
     </div>
</div>
{%- endblock input %}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img alt="Figure: the output of the code cell above" src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
{%- set width = output | get_metadata('width', 'image/png') -%}
{%- if width is not none %} width="{{ width | escape_html }}"{% endif -%}
{%- set height = output | get_metadata('height', 'image/png') -%}
{%- if height is not none %} height="{{ height | escape_html }}"{% endif %}>
</div>
{%- endblock data_png %}
{%- block any_cell scoped -%}
{%- set site = cell.metadata.get('cnnlib_site', {}) -%}
{%- if site.get('open') -%}
<details class="solution"><summary>{{ site.open }}</summary>
{%- endif -%}
{{ super() }}
{%- if site.get('close') -%}
</details>
{%- endif -%}
{%- endblock any_cell -%}
"""

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}static/lab.css">
<link rel="stylesheet" href="{root}static/site.css">
<style type="text/css">
{pygments_css}
</style>
{mathjax}</head>
<body class="site-page" data-jp-theme-light="true">
{nav}
<main class="jp-RenderedHTMLCommon jp-RenderedMarkdown">
{body}
</main>
</body>
</html>
"""


# ---------------------------------------------------------------- small helpers

def readme_intro(text):
    """The README's text before its first ``## `` heading (its title and introduction)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("## "):
            break
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def inline_title(text):
    """A notebook title (Markdown with `code`) as HTML."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(f"<code>{html.escape(p[1:-1])}</code>" if p.startswith("`") and p.endswith("`")
                   else html.escape(p) for p in parts)


def page_of(info):
    """Site path of a notebook's page."""
    return (NB_DIR / info["name"]).with_suffix(".html")


def plain_title(text):
    return text.replace("`", "")


def relative(target, page):
    """URL of site path ``target`` from the page at site path ``page`` (both PurePosixPath)."""
    return quote(posixpath.relpath(str(target), str(page.parent) or "."))


def _is_text(data):
    if b"\0" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def mathjax_source():
    """The folder of MathJax.js from jupyter-server-mathjax, or None."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    folder = Path(jupyter_server_mathjax.__file__).parent / "static"
    return folder if (folder / "MathJax.js").is_file() else None


def prepare_notebook(nb):
    """A copy of ``nb`` as the page shows it: no navigation cells, no NBVAL markers,
    and solution cells (runs of consecutive ones) marked to be wrapped in <details>."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if not make_nav.is_nav(c)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = NBVAL_MARKER.sub("", cell.source)
    solution = [SOLUTION in c.get("metadata", {}).get("tags", []) for c in nb.cells]
    for i, cell in enumerate(nb.cells):
        if not solution[i]:
            continue
        flags = {}
        if i == 0 or not solution[i - 1]:
            flags["open"] = "Solution (click to show)"
        if i + 1 == len(nb.cells) or not solution[i + 1]:
            flags["close"] = True
        if flags:
            cell.metadata["cnnlib_site"] = flags
    return nb


class _Tags(HTMLParser):
    """Start tags <a href> and <img src>, and end tags </a>, with their offsets in the text."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.found = []
        self._line_starts = [0]
        for m in re.finditer("\n", text):
            self._line_starts.append(m.end())
        self.feed(text)
        self.close()

    def _offset(self):
        line, col = self.getpos()
        return self._line_starts[line - 1] + col

    def handle_starttag(self, tag, attrs):
        if tag in ("a", "img"):
            raw = self.get_starttag_text()
            self.found.append(("start", tag, self._offset(), raw, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "a":
            self.found.append(("end", tag, self._offset(), f"</{tag}>", {}))


ATTRIBUTE = {name: re.compile(rf"(\b{name}\s*=\s*)([\"'])(.*?)\2", re.IGNORECASE | re.DOTALL)
             for name in ("href", "src")}


def _set_attribute(tag, name, value):
    """The start tag ``tag`` (HTML text) with attribute ``name`` set to ``value``."""
    return ATTRIBUTE[name].sub(lambda m: f"{m.group(1)}{m.group(2)}{html.escape(value)}{m.group(2)}", tag, count=1)


# ---------------------------------------------------------------- the builder

class SiteBuilder:
    """Collects every file of the site in memory ({site path: bytes}); ``write`` stores them."""

    def __init__(self, root=ROOT, out=None):
        self.root = Path(root).resolve()
        self.files = {}
        self.warnings = []
        self.pending = []          # repository files linked from a page, still to add
        self.done = set()
        self.infos = [make_nav.notebook_info(p) for p in make_nav.series_notebooks(self.root / NB_DIR)]
        self.series = {NB_DIR / info["name"]: info for info in self.infos}
        self.mathjax_dir = mathjax_source()
        self.exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({TEMPLATE_NAME: TEMPLATE})],
                                     template_file=TEMPLATE_NAME)
        self.exporter.exclude_anchor_links = False
        self.pygments_css = HtmlFormatter().get_style_defs(".highlight")

    # ------------------------------------------------ links

    def site_path(self, repo_path):
        """Where the repository file ``repo_path`` (PurePosixPath) lives in the site, or None.

        Queues the file to be added to the site when it is not a notebook page.
        """
        if repo_path == NB_DIR / make_nav.CONTENTS_NAME:
            return PurePosixPath("index.html")
        if repo_path in self.series:
            return repo_path.with_suffix(".html")
        path = self.root / repo_path
        if path.is_dir():
            readme = repo_path / "README.md"
            return self.site_path(readme) if (self.root / readme).is_file() else None
        if not path.is_file() or repo_path.suffix == ".ipynb":
            return None   # missing, or a notebook outside the series (a draft)
        if repo_path.suffix.lower() == ".md":
            target = repo_path.with_suffix(".html")
        elif repo_path.suffix.lower() in IMAGE_SUFFIXES:
            target = repo_path
        else:
            data = path.read_bytes()
            if _is_text(data):
                target = repo_path.with_name(repo_path.name + ".html")
            elif len(data) <= MAX_COPY_BYTES:
                target = repo_path
            else:
                return None
        if repo_path not in self.done:
            self.done.add(repo_path)
            self.pending.append(repo_path)
        return target

    def resolve(self, href, page_repo, page_site):
        """New value of a link ``href`` found on the page made from ``page_repo``.

        Returns ``href`` unchanged for anchors, absolute URLs and data: URIs,
        None where the target does not exist (the caller unlinks it).
        """
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path or href.startswith("/"):
            return href
        repo_target = posixpath.normpath(posixpath.join(str(page_repo.parent), unquote(parts.path)))
        if repo_target.startswith("../") or repo_target == "..":
            return None
        target = self.site_path(PurePosixPath(repo_target))
        if target is None:
            return None
        url = relative(target, page_site)
        return url + (f"#{parts.fragment}" if parts.fragment else "")

    def rewrite_links(self, text, page_repo, page_site):
        """``text`` (HTML) with every local href/src pointing into the site; dead links unlinked."""
        edits = []          # (start, end, replacement)
        dead_open = False
        for kind, tag, start, raw, attrs in _Tags(text).found:
            if kind == "end":
                if dead_open:
                    edits.append((start, start + len(raw), "</span>"))
                    dead_open = False
                continue
            attr = "src" if tag == "img" else "href"
            value = attrs.get(attr)
            if value is None:
                continue
            new = self.resolve(value, page_repo, page_site)
            if new == value:
                continue
            if new is None:
                self.warnings.append(f"{page_repo}: link to {value!r}: no such file in the series; "
                                     "shown as plain text")
                if tag == "a":
                    edits.append((start, start + len(raw),
                                  f'<span class="dead-link" title="{html.escape(value)} (not available)">'))
                    dead_open = True
                else:   # an image: its alt text instead
                    alt = html.escape(attrs.get("alt") or value)
                    edits.append((start, start + len(raw), f'<span class="dead-link">[image: {alt}]</span>'))
                continue
            edits.append((start, start + len(raw), _set_attribute(raw, attr, new)))
        for start, end, replacement in sorted(edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    # ------------------------------------------------ pages

    def mathjax_html(self, root_prefix):
        if self.mathjax_dir is not None:
            return MATHJAX_CONFIG % {"url": f"{root_prefix}mathjax/MathJax.js?config={MATHJAX_LOCAL_CONFIG}",
                                     "native": MATHJAX_NATIVE_FONTS}
        return MATHJAX_CONFIG % {"url": MATHJAX_CDN, "native": ""}

    def nav(self, page_site, prev=None, nxt=None, download=None, position="top"):
        links = []
        if prev is not None:
            href = relative(page_of(prev), page_site)
            links.append(f'<a class="prev" rel="prev" href="{href}">&lsaquo; {prev["number"]} '
                         f'{inline_title(prev["title"])}</a>')
        links.append(f'<a class="contents" href="{relative(PurePosixPath("index.html"), page_site)}">Contents</a>')
        if nxt is not None:
            href = relative(page_of(nxt), page_site)
            links.append(f'<a class="next" rel="next" href="{href}">{nxt["number"]} '
                         f'{inline_title(nxt["title"])} &rsaquo;</a>')
        if download is not None:
            links.append(f'<a class="download" href="{quote(download)}" download>Download the notebook (.ipynb)</a>')
        return f'<nav class="site-nav {position}" aria-label="Course navigation">\n' + "\n".join(links) + "\n</nav>"

    def notebook_page(self, k):
        info = self.infos[k]
        prev = self.infos[k - 1] if k > 0 else None
        nxt = self.infos[k + 1] if k + 1 < len(self.infos) else None
        page_repo = NB_DIR / info["name"]
        page_site = page_repo.with_suffix(".html")
        nb = prepare_notebook(make_nav.read_notebook(self.root / page_repo))
        resources = {
            "metadata": {"name": f"{info['number']} {plain_title(info['title'])} · {make_nav.SERIES_TITLE}",
                         "path": str(self.root / NB_DIR)},
            "site": {
                "root": "../",
                "mathjax": self.mathjax_html("../"),
            },
        }
        body, _ = self.exporter.from_notebook_node(nb, resources=resources)
        # The navigation goes in after the links of the notebook are rewritten: its links are the site's own.
        body = self.rewrite_links(body, page_repo, page_site)
        body = body.replace(NAV_TOP, self.nav(page_site, prev, nxt, download=info["name"]), 1)
        body = body.replace(NAV_BOTTOM, self.nav(page_site, prev, nxt, download=info["name"], position="bottom"), 1)
        self.files[page_site] = body.encode("utf-8")
        self.files[page_repo] = (self.root / page_repo).read_bytes()

    def page(self, page_site, title, body, nav):
        root = "../" * (len(page_site.parts) - 1)
        return PAGE.format(title=html.escape(title), root=root, pygments_css=self.pygments_css,
                           mathjax=self.mathjax_html(root), nav=nav, body=body)

    def index_page(self):
        readme = self.root / "README.md"
        page_repo, page_site = PurePosixPath("README.md"), PurePosixPath("index.html")
        intro = readme_intro(readme.read_text(encoding="utf-8")) if readme.is_file() else f"# {make_nav.SERIES_TITLE}\n"
        table = make_nav.readme_contents(self.infos)
        more = ("The pages show each notebook as it is stored, outputs included; every page has a link to "
                "download its notebook. To run the notebooks yourself, see the [README](README.md).")
        body = markdown2html_mistune(f"{intro}\n## Contents\n\n{table}\n\n{more}\n")
        body = body.replace("<table>", '<table class="contents">', 1)
        body = self.rewrite_links(body, page_repo, page_site)
        links = [f'<a href="index.html">{make_nav.SERIES_TITLE}</a>']
        if self.infos:
            first = self.infos[0]
            links.append(f'<a class="next" href="{relative(page_of(first), page_site)}">'
                         f'Start: {first["number"]} {inline_title(first["title"])} &rsaquo;</a>')
        nav = '<nav class="site-nav top" aria-label="Course navigation">\n' + "\n".join(links) + "\n</nav>"
        self.files[page_site] = self.page(page_site, make_nav.SERIES_TITLE, body, nav).encode("utf-8")

    def repo_file(self, repo_path):
        """Add one linked repository file: Markdown rendered, text highlighted, others copied."""
        path = self.root / repo_path
        data = path.read_bytes()
        suffix = repo_path.suffix.lower()
        if suffix == ".md":
            page_site = repo_path.with_suffix(".html")
            body = markdown2html_mistune(data.decode("utf-8"))
        elif suffix in IMAGE_SUFFIXES or not _is_text(data):
            self.files[repo_path] = data
            return
        else:
            page_site = repo_path.with_name(repo_path.name + ".html")
            try:
                lexer = get_lexer_for_filename(repo_path.name)
            except ClassNotFound:
                lexer = TextLexer()
            body = (f"<h1><code>{html.escape(str(repo_path))}</code></h1>\n"
                    + highlight(data.decode("utf-8"), lexer, HtmlFormatter(cssclass="highlight source")))
        body = self.rewrite_links(body, repo_path, page_site)
        nav = ('<nav class="site-nav top" aria-label="Course navigation">\n'
               f'<a class="contents" href="{relative(PurePosixPath("index.html"), page_site)}">Contents</a>\n'
               f'<span>{html.escape(str(repo_path))}</span>\n</nav>')
        title = f"{repo_path} · {make_nav.SERIES_TITLE}"
        self.files[page_site] = self.page(page_site, title, body, nav).encode("utf-8")

    def static_files(self):
        env = self.exporter.environment
        lab_css = "".join(env.loader.get_source(env, name)[0] + "\n"
                          for name in ("static/index.css", "static/theme-light.css"))
        self.files[PurePosixPath("static/lab.css")] = lab_css.encode("utf-8")
        self.files[PurePosixPath("static/site.css")] = SITE_CSS.encode("utf-8")
        if self.mathjax_dir is not None:
            for path in sorted(self.mathjax_dir.rglob("*")):
                rel = path.relative_to(self.mathjax_dir).as_posix()
                if path.is_file() and not rel.startswith(MATHJAX_SKIP):
                    self.files[PurePosixPath("mathjax") / rel] = path.read_bytes()

    def build(self):
        """Every file of the site, in ``self.files``; returns self."""
        self.static_files()
        for k in range(len(self.infos)):
            self.notebook_page(k)
        self.index_page()
        while self.pending:
            self.repo_file(self.pending.pop(0))
        return self

    # ------------------------------------------------ writing

    def write(self, out):
        """Store the site in ``out``; returns (written, deleted) counts. Unchanged files are not touched."""
        out = Path(out).resolve()
        if out == self.root or out in self.root.parents:
            raise SystemExit(f"build_site: refusing to write the site into {out} (the repository itself)")
        if out.exists() and not out.is_dir():
            raise SystemExit(f"build_site: {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
            raise SystemExit(f"build_site: {out} is not empty and was not made by this tool "
                             f"(no {MARKER} file); choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        files = dict(self.files)
        files[PurePosixPath(MARKER)] = b"Made by tools/build_site.py; the whole folder is rebuilt on every run.\n"
        written = 0
        for rel, data in sorted(files.items()):
            target = out / rel
            if target.is_file() and target.read_bytes() == data:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written += 1
        deleted = 0
        keep = {out / rel for rel in files}
        for path in sorted(out.rglob("*"), reverse=True):   # files before their folders
            if path.is_file() and path not in keep:
                path.unlink()
                deleted += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        return written, deleted


def build_site(root=ROOT, out=None, log=None):
    """Build the site of the repository at ``root`` into ``out`` (default ``root/_site``); returns the builder."""
    log = log or sys.stdout
    builder = SiteBuilder(root).build()
    out = Path(out) if out is not None else Path(root) / DEFAULT_OUT
    written, deleted = builder.write(out)
    for warning in builder.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if builder.mathjax_dir is None:
        print("note: jupyter-server-mathjax is not installed, so the pages load MathJax from a CDN "
              "(offline they show the raw TeX); python -m pip install jupyter-server-mathjax", file=sys.stderr)
    pages = sum(1 for p in builder.files if p.suffix == ".html")
    print(f"site: {len(builder.infos)} notebooks, {pages} pages, {len(builder.files)} files in {out} "
          f"({written} written, {deleted} removed)", file=log)
    return builder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {DEFAULT_OUT}/ in the repository)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="repository root (default: the one this script is in)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.root / DEFAULT_OUT
    build_site(args.root, os.fspath(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
