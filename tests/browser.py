"""Headless Chromium for tests that look at a rendered page.

``find_browser()`` looks for chromium / chromium-browser / google-chrome on PATH (or the
path in ``KIZASHI_CHROMIUM``). Installing one is not done here, since it can take minutes:
``make test`` runs ``scripts/ensure_chromium.sh`` first, which installs Debian's chromium
when it can. ``require_browser()`` skips the calling test with that advice when none is
found.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "no headless Chromium found (looked for " + ", ".join(BROWSER_NAMES) + " on PATH and "
    "$KIZASHI_CHROMIUM): run `bash scripts/ensure_chromium.sh` (as root, Debian/Ubuntu) or "
    "`sudo apt-get install -y --no-install-recommends chromium`"
)
BROWSER_TIMEOUT_S = 60

# Appended to a page: once everything has loaded, record every image's load state in the DOM.
_PROBE_ID = "kizashi-image-probe"
_PROBE_SCRIPT = f"""
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.map.call(document.images, function (img) {{
    return {{src: img.getAttribute("src"), complete: img.complete,
             naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight}};
  }});
  var out = document.createElement("pre");
  out.id = "{_PROBE_ID}";
  out.textContent = JSON.stringify(images);
  document.body.appendChild(out);
}});
</script>
"""


def find_browser() -> str | None:
    explicit = os.environ.get("KIZASHI_CHROMIUM")
    if explicit and Path(explicit).is_file():
        return explicit
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_browser() -> str:
    browser = find_browser()
    if browser is None:
        pytest.skip(INSTALL_HINT)
    return browser


def dump_dom(browser: str, page: Path, timeout_s: float = BROWSER_TIMEOUT_S) -> str:
    """The DOM of ``page`` after load (scripts run), as serialized by headless Chromium."""
    with tempfile.TemporaryDirectory(prefix="kizashi-chromium-") as profile:
        command = [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ]
        env = {**os.environ, "HOME": profile}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"headless {browser} did not finish within {timeout_s}s on {page}")
    if done.returncode != 0 or "<html" not in done.stdout.lower():
        pytest.fail(
            f"headless {browser} failed on {page} (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return done.stdout


def image_load_states(browser: str, page: Path, extra_html: str = "") -> list[dict]:
    """Load ``page`` in headless Chromium and return, for every <img>, its src, complete flag
    and natural size after the window's load event.

    The page is copied beside itself (so relative image paths still resolve) with a probe
    script and ``extra_html`` appended before ``</body>``.
    """
    source = page.read_text(encoding="utf-8")
    probe = extra_html + _PROBE_SCRIPT
    marker = source.lower().rfind("</body>")
    checked = source[:marker] + probe + source[marker:] if marker >= 0 else source + probe
    check_page = page.with_name(f".probe-{page.name}")
    check_page.write_text(checked, encoding="utf-8")
    try:
        dom = dump_dom(browser, check_page)
    finally:
        check_page.unlink(missing_ok=True)
    found = re.search(rf'<pre id="{_PROBE_ID}">(.*?)</pre>', dom, flags=re.DOTALL)
    if found is None:
        pytest.fail(f"the image probe did not run in {page} (no #{_PROBE_ID} in the dumped DOM)")
    return json.loads(html.unescape(found.group(1)))
