"""Drives the operators' dashboard in Debian's headless chromium through chromedriver:
logs in, sees every page, reruns a dead letter, answers an overdue appeal, reruns a failed
exchange from the transaction log, and saves a screenshot of each page. Arguments: base
URL, login, password, screenshot directory, the appeal to answer, the exchange to rerun. Prints one line per step; exits non-zero on the first failure."""

import os
import sys

import chromium

from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

base, login, password, shots, appeal, exchange = sys.argv[1:7]
os.makedirs(shots, exist_ok=True)

driver = chromium.start()


def shot(name):
    driver.save_screenshot(os.path.join(shots, f"{name}.png"))
    print(f"screenshot {name}")


def heading():
    return driver.find_element(By.TAG_NAME, "h1").text


def submit(button):
    """Clicks a form's button and waits until the next page has replaced this one (the old
    heading gone: chromedriver says so as a stale element or as a node of no document)."""
    old = driver.find_element(By.TAG_NAME, "h1")
    button.click()

    def replaced(d):
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            pass
        try:
            return bool(d.find_elements(By.TAG_NAME, "h1"))
        except WebDriverException:
            return False

    WebDriverWait(driver, 60).until(replaced)


try:
    # Without a session, a page sends the browser to the login.
    driver.get(f"{base}/admin")
    assert heading() == "Log in", heading()
    shot("login")
    driver.find_element(By.NAME, "login").send_keys(login)
    driver.find_element(By.NAME, "password").send_keys(password)
    submit(driver.find_element(By.CSS_SELECTOR, "form.login button"))
    assert heading() == "Connected systems", heading()
    body = driver.find_element(By.TAG_NAME, "main").text
    assert "emias" in body, body
    assert driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline"), "no latency line"
    shot("systems")

    driver.get(f"{base}/admin/outbox")
    assert heading() == "Dead letters", heading()
    rows = driver.find_elements(By.CSS_SELECTOR, "main tbody tr")
    assert rows, "no dead letter"
    shot("dead-letters")
    submit(rows[0].find_element(By.TAG_NAME, "button"))
    assert heading() == "Dead letters", heading()
    print("dead letter rerun")

    driver.get(f"{base}/admin/appeals")
    assert heading() == "Appeals", heading()
    assert driver.find_elements(By.CSS_SELECTOR, "table.districts tbody tr"), "no district table"
    shot("appeals")
    form = driver.find_element(By.CSS_SELECTOR, f"form[action='/admin/appeals/{appeal}/answer']")
    row = form.find_element(By.XPATH, "./ancestor::tr")
    assert "bad" in row.get_attribute("class"), "the overdue appeal is not red"
    form.find_element(By.NAME, "answer").send_keys("Answered from the dashboard (synthetic).")
    submit(form.find_element(By.TAG_NAME, "button"))
    assert heading() == "Appeals", heading()
    assert not driver.find_elements(By.CSS_SELECTOR, f"form[action='/admin/appeals/{appeal}/answer']")
    print("overdue appeal answered")

    driver.get(f"{base}/admin/traffic")
    assert heading() == "Traffic", heading()
    assert "POST /fhir/Communication" in driver.find_element(By.TAG_NAME, "main").text
    shot("traffic")

    driver.get(f"{base}/admin/transactions?status=server-error&direction=inbound")
    assert heading() == "Transactions", heading()
    shot("transactions")
    form = driver.find_element(By.CSS_SELECTOR, f"form[action='/admin/transactions/{exchange}/rerun']")
    submit(form.find_element(By.TAG_NAME, "button"))
    assert heading() == "Transactions", heading()
    main = driver.find_element(By.TAG_NAME, "main").text
    assert f"Reruns of {exchange}" in main, main
    assert "ok 201" in main, main
    print("exchange rerun")
    # Its rerun succeeded: a second one is refused, on a page saying why.
    driver.get(f"{base}/admin/transactions?status=server-error&direction=inbound")
    form = driver.find_element(By.CSS_SELECTOR, f"form[action='/admin/transactions/{exchange}/rerun']")
    submit(form.find_element(By.TAG_NAME, "button"))
    assert heading() == "Conflict", heading()
    main = driver.find_element(By.TAG_NAME, "main").text
    assert "ALREADY_RERUN" in main and "succeeded already" in main, main
    shot("rerun-refused")
    print("second rerun refused")

    driver.get(f"{base}/admin/documents")
    assert heading() == "Documents", heading()
    assert "dead-lettered (" in driver.find_element(By.TAG_NAME, "main").text
    shot("documents")

    driver.get(f"{base}/admin/figures")
    assert heading() == "Figures", heading()
    shot("figures")

    driver.get(f"{base}/admin/jobs")
    assert heading() == "Jobs", heading()
    assert "appeal-deadlines" in driver.find_element(By.TAG_NAME, "main").text
    shot("jobs")

    # Logging out ends the session: the pages send the browser to the login again.
    submit(driver.find_element(By.CSS_SELECTOR, "form.logout button"))
    driver.get(f"{base}/admin/appeals")
    assert heading() == "Log in", heading()
    print("logged out")
finally:
    driver.quit()
print("ok")
