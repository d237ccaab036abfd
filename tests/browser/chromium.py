"""Debian's headless chromium through Debian's chromedriver, as the browser tests use it
(no browser download: the machines here reach no browser vendor)."""

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def start():
    """A headless chromium at a laptop's window size, pages given a minute to load."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    return driver
