"""Headless Chromium from the system packages (Debian's chromium and chromium-driver), driven by selenium.

Nothing is downloaded: the browser and its driver must be installed (scripts/setup.sh installs them
where apt-get can), or named with FER_CHROMIUM and FER_CHROMEDRIVER.
"""

import os
import shutil


class BrowserUnavailable(RuntimeError):
    """No usable Chromium or ChromeDriver on this machine; the message says what to install."""


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) executables; BrowserUnavailable when either is missing."""
    chromium = os.environ.get('FER_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
    driver = os.environ.get('FER_CHROMEDRIVER') or shutil.which('chromedriver')
    if not chromium or not driver:
        missing = ' and '.join(name for name, path in (('chromium', chromium), ('chromedriver', driver)) if not path)
        raise BrowserUnavailable(f'{missing} not found: install the Debian packages chromium and chromium-driver '
                                 '(scripts/setup.sh does when apt-get is usable), or set FER_CHROMIUM and '
                                 'FER_CHROMEDRIVER')
    return chromium, driver


def headless_chromium(width: int = 1280, height: int = 1080):
    """A selenium WebDriver on headless Chromium that records the page's console messages."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        raise BrowserUnavailable(f'selenium is not installed ({error})') from None
    chromium, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ('--headless=new', '--disable-gpu', '--disable-dev-shm-usage', f'--window-size={width},{height}',
                     '--no-first-run', '--disable-extensions', '--disable-background-networking',
                     '--disable-component-update', '--disable-sync', '--disable-default-apps', '--mute-audio'):
        options.add_argument(argument)
    if hasattr(os, 'geteuid') and os.geteuid() == 0:  # Chromium refuses to sandbox itself as root
        options.add_argument('--no-sandbox')
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    try:
        return webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except Exception as error:  # selenium's WebDriverException and OSError alike: the browser did not start
        reason = ' '.join(str(error).split('Stacktrace:')[0].split())
        raise BrowserUnavailable(f'headless Chromium ({chromium}) did not start: {reason}') from None


def console_errors(driver) -> list[str]:
    """The page's console errors (and uncaught exceptions) since the last call."""
    return [entry['message'] for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']
