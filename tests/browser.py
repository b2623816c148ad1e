"""Open a page in headless Chromium (Debian's `chromium`): a screenshot, and what loaded.

`check_page` loads a copy of the page with a small script appended and a <base> pointing at the
original's folder (relative links resolve as they would there, and nothing is written beside the
original); after the load event the script lists every image that did not decode
(`naturalWidth == 0`) and counts the tables, and `--dump-dom` hands that back. Virtual time
(`--virtual-time-budget`) runs the page's timers without waiting for them in real time.
"""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs "
                                    "Debian's chromium where apt-get is available)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Steps, then the report: a step clicks the first link with that text, or with "view:<file>" the eye
# button of the results-table row naming <file> (the Snakemake report's viewer); each waits 700 ms.
PROBE = """<script>(() => {
  const steps = STEPS, done = [];
  function click(step) {
    if (step.startsWith("view:")) {
      const row = [...document.querySelectorAll("tr")].find(r => r.cells[0] && r.cells[0].textContent.trim() === step.slice(5));
      const eye = row && row.querySelector("a[iconname=eye]");
      return eye ? (eye.click(), true) : false;
    }
    const link = [...document.querySelectorAll("a")].find(a => a.textContent.trim() === step);
    return link ? (link.click(), true) : false;
  }
  function report() {
    const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                                       .map(i => (i.getAttribute("src") || "").slice(0, 80));
    const pre = document.createElement("pre");
    pre.id = "nx-check";
    pre.textContent = JSON.stringify({steps: done, images: document.images.length, broken: broken,
                                      tables: document.querySelectorAll("table").length,
                                      rows: document.querySelectorAll("table tr").length,
                                      frames: document.querySelectorAll("iframe").length,
                                      text: document.body.innerText.slice(0, 20000)});
    document.body.appendChild(pre);
  }
  function next(i) {
    if (i === steps.length) return report();
    done.push(click(steps[i]));
    setTimeout(() => next(i + 1), 700);
  }
  // the <base> has served the page's own relative images; without it, "#" links stay in the page
  window.addEventListener("load", () => { document.querySelectorAll("base[data-nx]").forEach(b => b.remove());
                                          setTimeout(() => next(0), 500); });
})();</script>"""


def _chromium(tmp: Path, *args, timeout=90) -> str:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def check_page(page: Path, tmp: Path, steps=()) -> dict:
    """{steps: [clicked?], images, broken: [src...], tables, rows, frames, text} of `page` after it
    loaded and the `steps` ran."""
    page = Path(page).resolve()
    text = page.read_text(encoding="utf-8")
    base = f'<base data-nx href="{page.parent.as_uri()}/">'
    text = re.sub(r"<head[^>]*>", lambda m: m.group(0) + base, text, count=1)
    at = text.rfind("</body>")
    probe = PROBE.replace("STEPS", json.dumps(list(steps)))
    text = text[:at] + probe + text[at:] if at >= 0 else text + probe
    copy = tmp / f"probe_{page.name}"
    copy.write_text(text, encoding="utf-8")
    dom = _chromium(tmp, "--run-all-compositor-stages-before-draw", f"--virtual-time-budget={5000 + 700 * len(steps)}",
                    "--dump-dom", copy.as_uri())
    found = re.search(r'<pre id="nx-check">(.*?)</pre>', dom, re.S)
    if not found:
        raise AssertionError(f"the probe did not run on {page} (no load event?)")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, out: Path, tmp: Path, size=(1280, 2000)) -> Path:
    _chromium(tmp, f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000",
              Path(page).resolve().as_uri())
    return out
