"""The budget tuner in a real browser: JupyterLab on 127.0.0.1 (a free port, a random token) serves a
copy of ``notebooks/04_tune.ipynb``; headless Chromium (Debian's ``chromium`` driven by Playwright)
runs all its cells, moves the token-budget slider and the documents-per-call slider with the
keyboard, sees the packing summary and the predicted speedup change, clicks Measure and sees a
measured point land on the speedup curve (more green diamond pixels, and the status line).

Screenshots go to ``tmp_path/screenshots`` and are copied to ``test-artifacts/browser/`` in the
repository (ignored by git); ``tuner.png`` there is the app with its measured point, the picture
committed as ``docs/tuner.png``. Without Chromium or Playwright the test is skipped, except in CI
(``CI`` set), where it fails: ``bash scripts/setup --dev`` installs both (``BATCHX_CHROMIUM``: another
Chromium binary).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "04_tune.ipynb"
NCBI_DEVEL = REPO.parent / "shared" / "corpora" / "ncbi-disease" / "devel.pubtator"
ARTIFACTS = REPO / "test-artifacts" / "browser"
# The flags that work here as root: without the background-networking ones Chromium keeps trying
# hosts that this machine's closed network refuses.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SMOKE_DOCS = "8"
GREEN = """img => {  // pixels of the measured points' green (#54a24b, blended) in the chart image
    if (!img.complete || !img.naturalWidth) return -1;  // a new picture still loading
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 1] - Math.max(d[i], d[i + 2]) > 30) n++;
    return n;
}"""
NOT_RUN_OR_BUSY = """() => {  // code cells whose prompt is not yet [n]: queued, running or never run
    const prompts = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'));
    return prompts.length === 0 || prompts.some(p => !/\\[\\d+\\]/.test(p.textContent));
}"""
KERNEL_IDLE = """() => {  // the status bar names the kernel and says Idle (the toolbar's dot is idle before)
    const items = Array.from(document.querySelectorAll('.jp-StatusBar-Widget .jp-StatusBar-TextItem'));
    return items.some(e => /Python.*\\| Idle/.test(e.textContent));
}"""
STARTED = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
    .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""


def _chromium() -> str | None:
    found = os.environ.get("BATCHX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and Path(found).exists() else None


def _require_tools() -> str:
    chromium, playwright = _chromium(), importlib.util.find_spec("playwright")
    missing = [name for name, ok in (("chromium (apt-get install chromium)", chromium),
                                     ("playwright (pip install playwright)", playwright)) if not ok]
    if missing:
        reason = f"missing {', '.join(missing)}: bash scripts/setup --dev installs them"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return str(chromium)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except OSError:
        return 0


def _clean_notebook(source: Path, target: Path) -> None:
    """A copy without outputs: what the browser shows is what this run computed."""
    notebook = json.loads(source.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook.get("metadata", {}).pop("widgets", None)
    target.write_text(json.dumps(notebook, indent=1))


class Lab:
    """A JupyterLab server for one test, in folders of its own (no user settings, kernels or news)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.token = folder, secrets.token_hex(16)
        self.root = folder / "root"
        self.root.mkdir(parents=True)
        _clean_notebook(NOTEBOOK, self.root / NOTEBOOK.name)
        settings = folder / "lab-settings"
        (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
        (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            '{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHX_", "JUPYTER"))}
        env.update(
            JUPYTER_TOKEN=self.token, JUPYTER_CONFIG_DIR=str(folder / "config"), JUPYTER_DATA_DIR=str(folder / "data"),
            JUPYTER_RUNTIME_DIR=str(folder / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(folder / "workspaces"), IPYTHONDIR=str(folder / "ipython"),
            BATCHX_LM="emulated:hosted-api", BATCHX_SMOKE_DOCS=SMOKE_DOCS,
            BATCHX_CORPUS=str(NCBI_DEVEL) if NCBI_DEVEL.exists() else "sample")
        self.log_path = folder / "jupyterlab.log"
        self.log = self.log_path.open("w")
        # The kernelspec "python3" (ipykernel's, in the venv) starts `python`, which jupyter_client
        # replaces by the server's own interpreter: this venv's, where the toolkit is installed.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={_free_port()}",
             "--ServerApp.open_browser=False", "--ServerApp.allow_root=True", f"--ServerApp.root_dir={self.root}",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"],
            cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = self._wait_until_up(folder / "runtime" / f"jpserver-{self.process.pid}.json")

    def _wait_until_up(self, info: Path, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"JupyterLab exited ({self.process.returncode}):\n{log}")
            if info.exists():
                try:
                    url = json.loads(info.read_text())["url"]
                except (ValueError, KeyError):
                    url = None
                if url and _get(f"{url}api/status?token={self.token}") == 200:
                    return url
            time.sleep(0.5)
        raise RuntimeError(f"JupyterLab not up after {timeout:.0f} s:\n{self.log_path.read_text()[-3000:]}")

    def notebook_url(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?reset&token={self.token}"

    def close(self) -> None:
        """Shut the server down through its API (it ends its kernels), then by signal if it hangs."""
        if self.process.poll() is None:
            try:
                request = urllib.request.Request(f"{self.url}api/shutdown?token={self.token}", method="POST")
                urllib.request.urlopen(request, timeout=10).close()
            except (OSError, AttributeError):
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the server and its kernel
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def chromium() -> str:
    return _require_tools()


@pytest.fixture
def lab(chromium: str, tmp_path: Path) -> Iterator[Lab]:
    server = Lab(tmp_path / "lab")
    try:
        yield server
    finally:
        server.close()


def _dismiss_dialogs(page) -> None:
    """JupyterLab's first-run dialogs (a kernel to select, say): take the default."""
    for _ in range(3):
        dialog = page.locator(".jp-Dialog")
        if not dialog.count():
            return
        dialog.locator("button.jp-mod-accept").first.click()
        page.wait_for_timeout(500)


def _value(pane, name: str) -> str:
    match = re.search(rf"^{name}\s+(\S+)", pane.inner_text(), re.MULTILINE)
    assert match, f"no {name} in {pane.inner_text()!r}"
    return match.group(1)


def _press(page, handle, key: str, times: int, changed, what: str) -> None:
    """Keyboard on a slider handle (each press is one step and one change), then wait for the views."""
    handle.focus()
    for _ in range(times):
        page.keyboard.press(key)
        page.wait_for_timeout(150)
    deadline = time.monotonic() + 60
    while not changed():
        assert time.monotonic() < deadline, f"{what} did not change within 60 s"
        page.wait_for_timeout(250)
    for _ in range(2):  # every press handled: the kernel idle, and still idle a moment later
        page.wait_for_function(KERNEL_IDLE)
        page.wait_for_timeout(1000)


def _errors(page) -> list[str]:
    return page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").all_inner_texts()


def test_the_tuner_runs_in_jupyterlab_in_a_real_browser(chromium: str, lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                                    chromium_sandbox=False)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        try:
            page.goto(lab.notebook_url(NOTEBOOK.name))
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            _dismiss_dialogs(page)
            page.wait_for_function(KERNEL_IDLE)
            page.screenshot(path=shots / "01-opened.png")

            _run_all_cells(page)
            packing = page.locator(".widget-html:has-text('packing of this corpus')").first
            prediction = page.locator(".widget-html:has-text('prediction (')").first
            _wait_all_cells(page)
            assert not _errors(page), _errors(page)
            packing.wait_for()
            page.wait_for_selector(".widget-slider .noUi-handle")
            page.screenshot(path=shots / "02-ran.png")

            app = page.locator(".jp-OutputArea-output .widget-vbox").first
            curve = app.locator(".widget-image").nth(1)
            budget, per_call = (page.locator(".widget-slider .noUi-handle").nth(i) for i in (0, 1))
            before_packing, before_speedup = packing.inner_text(), _value(prediction, "speedup")

            _press(page, budget, "ArrowLeft", 4, lambda: packing.inner_text() != before_packing, "the packing summary")
            assert budget.get_attribute("aria-valuenow").startswith("6144")
            _press(page, per_call, "ArrowLeft", 4, lambda: _value(prediction, "docs_per_call") == "4",
                   "the prediction's documents per call")
            assert per_call.get_attribute("aria-valuenow").startswith("4")
            speedup = _value(prediction, "speedup")
            assert float(speedup) < float(before_speedup), (before_speedup, speedup)  # fewer per call: less speedup
            page.screenshot(path=shots / "03-moved.png")

            page.wait_for_function(f"img => ({GREEN})(img) >= 0", arg=curve.element_handle())
            green = curve.evaluate(GREEN)  # the points measured so far (the notebook's own cell measures one)
            app.locator("button:text-is('Measure')").click()
            status = app.locator(".widget-html:has-text('measured speedup')")
            status.wait_for()
            assert re.search(r"measured speedup [\d.]+x \(predicted [\d.]+x\) on \d+ documents", status.inner_text())
            page.wait_for_function(f"img => ({GREEN})(img) > {green}", arg=curve.element_handle(), timeout=60_000)
            assert not _errors(page), _errors(page)
            app.scroll_into_view_if_needed()
            page.screenshot(path=shots / "04-measured.png")
            app.screenshot(path=shots / "tuner.png")
        except Exception:
            page.screenshot(path=shots / "failure.png")
            raise
        finally:
            browser.close()
            shutil.rmtree(ARTIFACTS, ignore_errors=True)
            ARTIFACTS.mkdir(parents=True)
            for shot in shots.iterdir():
                shutil.copy(shot, ARTIFACTS / shot.name)
            shutil.copy(lab.log_path, ARTIFACTS / "jupyterlab.log")
    print(f"browser test: {time.monotonic() - started:.1f} s in the browser; screenshots in {ARTIFACTS}")


def _run_all_cells(page, tries: int = 3) -> None:
    """Run > Run All Cells, again if no cell started within 20 s (a click before the kernel's
    connection is complete can be lost)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function(STARTED, timeout=20_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            page.wait_for_function(KERNEL_IDLE)
    raise AssertionError(f"Run All Cells started no cell in {tries} tries")


def _wait_all_cells(page, timeout: float = 180) -> None:
    """Until every code cell has run ([n] prompts), failing early on an error output."""
    deadline = time.monotonic() + timeout
    page.wait_for_timeout(500)
    while page.evaluate(NOT_RUN_OR_BUSY):
        assert not _errors(page), _errors(page)
        assert time.monotonic() < deadline, f"cells still queued or running after {timeout:.0f} s"
        page.wait_for_timeout(500)
