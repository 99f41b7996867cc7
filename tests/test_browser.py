"""The sliders of notebooks 01 and 02 in a real browser: JupyterLab + headless Chromium (Playwright).

Every other test runs the notebooks in batch (``ACTIONPP_BATCH=1``: no widgets), so this is the one
place the widget cells run. For each notebook, a temporary copy (smoke-profile sizes, sliders on,
``OUT_DIR`` in the temporary folder: nothing in the repository is touched) is opened in JupyterLab
on 127.0.0.1 with a token; all cells are run; the test asserts that no cell raised, that the
figures rendered, and that moving the first slider of the first interactive figure with the
keyboard redraws the figure under it. Everything is shut down at the end.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``ACTIONPP_CHROMIUM``) and Playwright's Python
API (``pip install playwright``; its own browser download is not used). Skips with the reason when
either is missing. Marked ``browser``: not in the default run; ``pytest -m browser`` (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from actionpp import notebook as nbx
from actionpp.paths import repo_root

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

CHROMIUM = Path(os.environ.get("ACTIONPP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTEBOOKS = ["01_class_centers", "02_temperature_schedule"]


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; its browser download is not needed)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ACTIONPP_CHROMIUM)")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lab_copy(stem: str, folder: Path) -> Path:
    """The notebook with its smoke-profile values (sliders on) and OUT_DIR in ``folder``."""
    src = repo_root() / "notebooks" / f"{stem}.ipynb"
    values = {**nbx.load_profile(src, "smoke"), "INTERACTIVE": True, "OUT_DIR": str(folder / "out" / stem)}
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split(":", 1)[0].strip()
        if name in values:
            annot, rest = line.split("=", 1)[0], line.split("#", 1)[1] if "#" in line else ""
            line = f"{annot}= {values[name]!r}  # {rest.strip()}"
        lines.append(line)
    cell.source = "\n".join(lines)
    dest = folder / f"{stem}.ipynb"
    nbformat.write(nb, dest)
    return dest


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a token, serving copies of 01 and 02; yields (url, token, folder)."""
    _playwright()
    folder = tmp_path_factory.mktemp("lab")
    for stem in NOTEBOOKS:
        _lab_copy(stem, folder)
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("ACTIONPP_BATCH", "MPLBACKEND")}  # widgets wanted
    env.update({"JUPYTER_CONFIG_DIR": str(folder / ".config"), "JUPYTER_RUNTIME_DIR": str(folder / ".runtime"),
                "OMP_NUM_THREADS": "1"})
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [str(jupyter), "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
           "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly",
           f"--LabApp.workspaces_dir={folder / '.workspaces'}", f"--LabApp.user_settings_dir={folder / '.settings'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, token, folder
    finally:
        try:
            req = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10)
            proc.wait(30)
        except Exception:  # noqa: BLE001 - fall back to signals
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(lab_server):
    with _playwright()() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


CELL_STATES = """() => {
    const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    if (!nb || !nb.content || !nb.content.model) return 'no notebook';
    const cells = nb.content.model.cells, out = [];
    for (let i = 0; i < cells.length; i++) {
        const c = cells.get(i);
        if (c.type !== 'code') continue;
        const kinds = [];
        for (let j = 0; j < c.outputs.length; j++) kinds.push(c.outputs.get(j).type);
        out.push(`${i}:[${c.executionCount}] ${kinds.join(',')}`);
    }
    return out.join('; ') + '; kernel ' + nb.sessionContext.session.kernel.status;
}"""


def _wait(page, js: str, timeout_s: float, what: str) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(js, timeout=timeout_s * 1000, polling=500)
    except PlaywrightTimeout:
        try:
            states = page.evaluate(CELL_STATES)
        except PlaywrightError as exc:
            states = f"(cell states unavailable: {exc})"
        pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; cells: {states}")


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_sliders_redraw_their_figure_in_jupyterlab(stem, lab_server, browser):
    url, token, folder = lab_server
    t0 = time.perf_counter()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # a workspace of its own, reset: the previous test's notebook must not be restored as the current tab
    page.goto(f"{url}/lab/workspaces/{stem}/tree/{stem}.ipynb?reset&token={token}", timeout=120_000)
    # the app, this notebook's panel and an idle kernel
    _wait(page, "() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                f"window.jupyterapp.shell.currentWidget.context && "
                f"window.jupyterapp.shell.currentWidget.context.path === '{stem}.ipynb' && "
                "window.jupyterapp.shell.currentWidget.sessionContext && "
                "window.jupyterapp.shell.currentWidget.sessionContext.session && "
                "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel && "
                "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'", 120, "kernel")
    n_code = sum(c.cell_type == "code" for c in nbformat.read(folder / f"{stem}.ipynb", as_version=4).cells)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # done when every code cell has an execution count and the kernel is idle again, or a cell raised
    # (run-all stops there); the outputs are read back from the notebook model
    done = f"""() => {{
        const nb = window.jupyterapp.shell.currentWidget;
        const cells = nb.content.model.cells;
        let n = 0, counted = 0, raised = false;
        for (let i = 0; i < cells.length; i++) {{
            const c = cells.get(i);
            if (c.type !== 'code') continue;
            n++;
            if (c.executionCount) counted++;
            for (let j = 0; j < c.outputs.length; j++) {{
                if (c.outputs.get(j).type === 'error') raised = true;
            }}
        }}
        const idle = nb.sessionContext.session.kernel.status === 'idle';
        return idle && (raised || (n === {n_code} && counted === n));
    }}"""
    _wait(page, done, 600, "all cells")
    ran_s = time.perf_counter() - t0
    # no cell raised, and no widget failed to display
    outputs = page.evaluate("""() => {
        const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
        const out = [];
        for (let i = 0; i < cells.length; i++) {
            const c = cells.get(i);
            if (c.type !== 'code') continue;
            for (let j = 0; j < c.outputs.length; j++) { out.push(c.outputs.get(j).toJSON()); }
        }
        return out;
    }""")
    raised = [o for o in outputs if o.get("output_type") == "error"]
    assert not raised, f"{stem}: cells raised {[(o['ename'], o['evalue']) for o in raised]}"
    assert not page.locator("text=Error displaying widget").count(), f"{stem}: a widget failed to display"
    # the figures rendered: static ones and the interactive one
    images = page.locator(".jp-OutputArea-output img")
    _wait(page, "() => document.querySelectorAll('.widget-interact .widget-output img').length > 0", 120, "widget")
    n_img = images.count()
    assert n_img >= 3, f"{stem}: only {n_img} figures rendered"
    sizes = images.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert all(w > 50 and h > 50 for w, h in sizes), f"{stem}: an image did not render: {sizes}"
    # move the first slider of the first interactive figure with the keyboard: its figure redraws
    box = page.locator(".widget-interact").first
    box.scroll_into_view_if_needed()
    before = box.locator(".widget-output img").first.get_attribute("src")
    readout = box.locator(".widget-readout").first.inner_text()
    handle = box.locator(".noUi-handle").first
    handle.focus()
    t_move = time.perf_counter()
    page.keyboard.press("ArrowRight")
    js_before = json.dumps(before)
    _wait(page, f"""() => {{
        const img = document.querySelector('.widget-interact .widget-output img');
        return img && img.getAttribute('src') !== {js_before} && img.naturalWidth > 50;
    }}""", 120, "redraw")
    redraw_s = time.perf_counter() - t_move
    assert box.locator(".widget-readout").first.inner_text() != readout, "the slider's value did not change"
    assert not errors, f"{stem}: page errors {errors[:3]}"
    page.close()
    print(f"{stem}: all cells {ran_s:.1f} s, {n_img} figures, slider redraw {redraw_s:.1f} s")
