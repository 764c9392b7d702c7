"""A real browser for the tests: Debian's headless Chromium, driven by Selenium through Debian's chromedriver."""
import contextlib, shutil, tempfile
from pathlib import Path

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-dev-shm-usage', '--window-size=1366,900']
OFFLINE = '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost'  # no name but this machine resolves


@contextlib.contextmanager
def chromium(offline: bool = False, page_load_s: float = 60):
    "A headless Chromium with a fresh profile (with `offline`, only 127.0.0.1 is reachable); closed and removed after."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='chromium-')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f'--user-data-dir={profile}'] + ([OFFLINE] if offline else []): opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(page_load_s)
    try: yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, css: str, timeout_s: float = 30, text: str | None = None):
    "The first element matching `css` once it is shown (and contains `text`), else a TimeoutException naming both."
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    def found(d):
        for el in d.find_elements(By.CSS_SELECTOR, css):
            if el.is_displayed() and (text is None or text in el.text): return el
        return False
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(found, f'no visible {css!r}' + (f' with {text!r}' if text else ''))


def screenshot_on_failure(driver, request, folder: Path) -> Path | None:
    "Save the page as PNG (and its DOM) into `folder` when the test's call failed, to make the failure readable."
    rep = getattr(request.node, 'rep_call', None)
    if rep is None or not rep.failed: return None
    folder.mkdir(parents=True, exist_ok=True)
    png = folder/f'{request.node.name}.png'
    driver.save_screenshot(str(png))
    (folder/f'{request.node.name}.html').write_text(driver.page_source)
    print(f'screenshot of the failed page: {png}')
    return png
