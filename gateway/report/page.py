"""The experiment page: a static HTML shell that holds no data, and the script and style
it loads from the package (no build step, no CDN: the gateway may run offline).

The script reads the report from `GET /v1/experiments/{name}/report` with the API key as
a bearer header. With keys configured, the page shows a small form; the key is kept in
the tab's sessionStorage (gone when the tab closes) and never travels in a URL, so it
never reaches an access log or a Referer. The Content-Security-Policy allows only the
gateway's own script, style and API.
"""

from __future__ import annotations

import html
from importlib import resources

ASSETS = {"report.js": "text/javascript", "report.css": "text/css"}
ASSET_PREFIX = "/experiments/assets/"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Experiment {title} - inference-gateway</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{prefix}report.css">
<script src="{prefix}report.js" defer></script>
</head>
<body data-experiment="{name}">
<header><h1>Experiment <span id="experiment-name">{title}</span></h1>
<p id="status" role="status">Loading the report...</p></header>
<form id="login" hidden>
<label for="api-key">API key</label>
<input id="api-key" type="password" autocomplete="current-password" required>
<button type="submit">Show the report</button>
<small>Kept in this tab's session storage only; sent as an Authorization header.</small>
</form>
<main id="report" hidden>
<section id="summary"></section>
<h2>Per variant</h2>
<div class="scroll"><table id="variants"></table></div>
<h2>Against control</h2>
<div class="scroll"><table id="comparisons"></table></div>
<h2>Intervals</h2>
<div id="intervals" class="plots"></div>
<h2>Latency distributions</h2>
<div id="latency" class="plots"></div>
<h2>Assignments over time</h2>
<div id="assignments" class="plots"></div>
</main>
<noscript>This page draws the report with a script; the same report is JSON at
/v1/experiments/{title}/report.</noscript>
</body>
</html>
"""


def shell(name: str) -> str:
    escaped = html.escape(name, quote=True)
    return SHELL.format(title=escaped, name=escaped, prefix=ASSET_PREFIX)


def asset(file: str) -> tuple[bytes, str] | None:
    """The bytes and media type of a shipped asset; None for any other name."""
    if file not in ASSETS:
        return None
    data = resources.files("gateway.report").joinpath("static", file).read_bytes()
    return data, ASSETS[file]
