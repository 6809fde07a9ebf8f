"""A DVC plots page opened in headless Chromium (Debian's `chromium`) with the network blocked.

Playwright drives the system's Chromium (it downloads no browser of its own here). Every request that
is not for a local file is refused and recorded; every console error and uncaught exception is
recorded; and each vegaEmbed call of DVC's page is captured, so that the Vega view it drew can be
asked how many marks it holds and which revisions its colour legend lists.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")

# Runs before the page's own scripts: wraps window.vegaEmbed as soon as the inlined vega-embed defines it.
CAPTURE = """
window.__embeds = [];
let real;
Object.defineProperty(window, 'vegaEmbed', {
  configurable: true,
  set(value) { real = value; },
  get() {
    return real && function (el, spec, opts) {
      const done = real(el, spec, opts);
      window.__embeds.push(done.then(r => ({el, view: r.view}), e => ({el, error: String(e)})));
      return done;
    };
  },
});
"""

# Per embed: the data marks drawn (items of non-group marks whose role is 'mark') and the colour scale's domain.
INSPECT = """
async () => {
  const count = (node) => {
    let n = 0;
    for (const item of node.items || []) {
      if (node.role === 'mark' && node.marktype !== 'group') n += 1;
      for (const child of item.items || []) n += count(child);
    }
    return n;
  };
  const done = await Promise.all(window.__embeds);
  return {
    divs: [...document.querySelectorAll('.vega-embed')].map(d => d.id),
    embeds: done.map(r => r.error ? {id: r.el, error: r.error} : {
      id: r.el.replace('#', ''),
      marks: count(r.view.scenegraph().root),
      legend: (() => { try { return r.view.scale('color').domain().map(String); } catch (e) { return []; } })(),
    }),
  };
}
"""


def open_page(page: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """Open `page` offline; return the requests refused, the console errors and what each vega embed drew."""
    from playwright.sync_api import sync_playwright

    refused: list[str] = []
    errors: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.add_init_script(CAPTURE)
            tab.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                      else (refused.append(route.request.url), route.abort()))
            tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(page.resolve().as_uri(), wait_until="load")
            drawn = tab.evaluate(INSPECT)
            if screenshot is not None:
                tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"refused": refused, "errors": errors, **drawn}
