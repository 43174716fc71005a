"""Headless Chromium (driven by chromedriver through Selenium) uses gradio_app.py's page through
the gateway the way a person does.

Usage: gradio_browser.py HOST PORT USER PASSWORD SCREENSHOT. Chromium resolves HOST to 127.0.0.1
(a real host name, as remote users have). It first opens the page without credentials, then
with them in the URL (Chromium answers the 401 challenge with them and keeps them in its
authentication cache for the page's later requests, as after typing them into the dialog), types
a name, clicks Greet and waits for the greeting. Prints one JSON object: what the first
navigation got, the greeting, and every network request the browser made (URL, status).
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

host, port, user, password, screenshot = sys.argv[1:6]
chromium = os.environ.get("VASTGATE_CHROMIUM", "/usr/bin/chromium")
chromedriver = os.environ.get("VASTGATE_CHROMEDRIVER", "/usr/bin/chromedriver")

profile = tempfile.mkdtemp(prefix="vastgate-chromium-")
options = webdriver.ChromeOptions()
options.binary_location = chromium
for flag in [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
    f"--user-data-dir={profile}",
    # Only the gateway's name resolves; anything else the page might fetch fails fast.
    f"--host-resolver-rules=MAP {host} 127.0.0.1, MAP * ~NOTFOUND",
]:
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"performance": "ALL"})

driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
driver.set_page_load_timeout(120)
result = {}
try:
    base = f"http://{host}:{port}/"
    driver.get(base)
    result["anonymous_body"] = driver.find_element(By.TAG_NAME, "body").text[:500]

    driver.get(f"http://{user}:{password}@{host}:{port}/")
    wait = WebDriverWait(driver, 120)
    field = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#name textarea")))
    field.send_keys("browser")
    driver.find_element(By.ID, "greet").click()
    wait.until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#greeting textarea").get_attribute("value")
    )
    result["greeting"] = driver.find_element(By.CSS_SELECTOR, "#greeting textarea").get_attribute(
        "value"
    )
    result["page_url"] = driver.current_url
    driver.save_screenshot(screenshot)
finally:
    requests = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            requests.setdefault(params["requestId"], {})["url"] = params["request"]["url"]
        elif message.get("method") == "Network.responseReceived":
            response = params["response"]
            seen = requests.setdefault(params["requestId"], {})
            seen["status"] = response["status"]
            seen["www_authenticate"] = {
                k.lower(): v for k, v in response.get("headers", {}).items()
            }.get("www-authenticate")
        elif message.get("method") == "Network.webSocketCreated":
            requests.setdefault(params["requestId"], {})["url"] = params["url"]
    result["requests"] = list(requests.values())
    driver.quit()
print(json.dumps(result), flush=True)
