"""Drives the demo's dashboard in Debian's headless chromium through chromedriver, as a
newcomer would on first start: logs in as the demo operator and finds the demo's data on
every page; saves a screenshot of each. Arguments: base URL, login, password, screenshot
directory. Prints one line per page; exits non-zero on the first failure."""

import os
import re
import sys

import chromium

from selenium.webdriver.common.by import By

base, login, password, shots = sys.argv[1:5]
os.makedirs(shots, exist_ok=True)

driver = chromium.start()


def visit(path, title, name):
    driver.get(f"{base}{path}")
    heading = driver.find_element(By.TAG_NAME, "h1").text
    assert heading == title, f"{path}: {heading}"
    driver.save_screenshot(os.path.join(shots, f"demo-{name}.png"))
    print(f"page {name}")
    return driver.find_element(By.TAG_NAME, "main").text


def rows(css="main tbody tr"):
    return len(driver.find_elements(By.CSS_SELECTOR, css))


try:
    driver.get(f"{base}/admin/login")
    driver.find_element(By.NAME, "login").send_keys(login)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()

    text = visit("/admin", "Connected systems", "systems")
    for partner in ("emias", "fhir-mis", "nsi", "remd"):
        assert partner in text, f"{partner} missing: {text}"
    assert driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline"), "no latency line"

    visit("/admin/outbox", "Dead letters", "dead-letters")
    assert rows() > 0, "no dead letters"

    text = visit("/admin/documents", "Documents", "documents")
    registered = re.search(r"registered \((\d+)\)", text)
    assert registered and int(registered.group(1)) > 0, text

    visit("/admin/appeals", "Appeals", "appeals")
    assert rows("table.districts tbody tr") >= 4, "no district table"

    text = visit("/admin/traffic", "Traffic", "traffic")
    assert "fhir.Appointment.$book" in text, text

    visit("/admin/transactions", "Transactions", "transactions")
    assert rows() > 0, "an empty transaction log"

    text = visit("/admin/figures", "Figures", "figures")
    for channel in ("internet", "phone", "registry", "kiosk"):
        assert channel in text, f"no {channel} bookings: {text}"
    assert "Central" in text and "South" in text, text

    text = visit("/admin/jobs", "Jobs", "jobs")
    assert "daily-stats" in text and "schedule-reconciliation" in text, text
finally:
    driver.quit()
print("ok")
