"""The browser the page tests use: Debian's headless Chromium runs a page's JavaScript, and offline reaches 127.0.0.1 only."""
import functools, http.server, threading
import pytest
from browser import chromium, wait_for

PAGE = b"""<!doctype html><html><body><div id="out">waiting</div>
<script>setTimeout(() => { document.getElementById('out').textContent = 'rendered by script' }, 200)</script>
<script src="https://cdn.jsdelivr.net/npm/nothing-here@1/x.js" onerror="document.title='cdn unreachable'"
        onload="document.title='cdn reached'"></script></body></html>"""


@pytest.fixture
def page_url():
    "A one-page HTTP server on 127.0.0.1."
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Type', 'text/html')
            self.end_headers()
            self.wfile.write(PAGE)
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown()


def test_chromium_runs_the_pages_script_and_offline_reaches_no_cdn(page_url):
    "The DOM a test reads is the one the page's script made; offline, a CDN script fails to load."
    with chromium(offline=True) as driver:
        driver.get(page_url)
        assert wait_for(driver, '#out', text='rendered by script').text == 'rendered by script'
        assert driver.title == 'cdn unreachable'
