"""The web page in a real browser: Debian's chromium and chromedriver,
driven by selenium, checked by axe (axe-selenium-python).

Run by tests/it/browser.rs against a live gateway over a fake engine. It
asks the test for what only the test can do by printing a line `> <what>`
and reading one line back: `> deploy` (a signed deploy whose job waits),
`> release` (the waiting jobs end), `> advance <secs>` (the gateway's
clock moves). Every wait is for a condition, with a deadline.
"""

import sys

from axe_selenium_python import Axe
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

BASE, ALICE, BOB, SCREENSHOT = sys.argv[1:5]
WAIT = 20


def ask(what):
    print(f"> {what}", flush=True)
    answer = sys.stdin.readline().strip()
    if not answer.startswith("ok"):
        raise AssertionError(f"the test answered {answer!r} to {what!r}")
    return answer[3:]


def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def title_is(driver, title):
    expected = f"{title} · delivery-hook"
    WebDriverWait(driver, WAIT).until(
        lambda d: d.title == expected,
        message=f"expected the page {expected!r}",
    )


def sign_in(driver, token):
    driver.get(f"{BASE}/ui/")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    # The answer has replaced the form's page.
    WebDriverWait(driver, WAIT).until(expected_conditions.staleness_of(field))


def sign_out(driver):
    driver.find_element(By.CSS_SELECTOR, "form[action='/ui/sign-out'] button").click()
    title_is(driver, "Sign in")


def state_of(driver, job):
    """The job's state in the recent jobs' table, read in one step: the
    page's script replaces the rows while it runs."""
    return driver.execute_script(
        "const a = document.querySelector(`#jobs a[href='/ui/jobs/${arguments[0]}']`);"
        "return a ? a.closest('tr').querySelector('.state').textContent : null;",
        job,
    )


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def accessible(driver):
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    serious = [v for v in results["violations"] if v["impact"] in ("serious", "critical")]
    assert not serious, axe.report(serious)
    print(f"axe: {len(results['violations'])} findings, none serious or critical", flush=True)


def live_update(driver):
    """A deploy made by a signed request appears, then turns succeeded,
    while a marker set on the page survives: no reload."""
    driver.execute_script("window.dhMarker = 'kept';")
    job = ask("deploy")
    WebDriverWait(driver, WAIT).until(lambda d: state_of(d, job) in ("queued", "running"))
    ask("release")
    WebDriverWait(driver, WAIT).until(lambda d: state_of(d, job) == "succeeded")
    assert driver.execute_script("return window.dhMarker;") == "kept", "the page was reloaded"
    print(f"live: job {job} appeared and turned succeeded without a reload", flush=True)
    return job


def walled_off(driver, job):
    """Bob sees shop only: billing's pages, rows and outputs are 404."""
    sign_in(driver, BOB)
    title_is(driver, "Projects")
    for path in ("/ui/p/billing", "/ui/p/billing/jobs", f"/ui/jobs/{job}", f"/ui/jobs/{job}/output"):
        driver.get(BASE + path)
        title_is(driver, "Not found")
    driver.get(f"{BASE}/ui/p/shop")
    title_is(driver, "shop")


def old_cookie_refused(driver):
    sign_in(driver, ALICE)
    title_is(driver, "Projects")
    old = driver.get_cookie("dh_ui")
    assert old and old["httpOnly"], old
    sign_out(driver)
    driver.add_cookie({"name": "dh_ui", "value": old["value"], "path": "/ui"})
    driver.get(f"{BASE}/ui/p/billing")
    title_is(driver, "Sign in")
    print("the cookie sent again after sign-out was refused", flush=True)


def expires(driver):
    sign_in(driver, BOB)
    title_is(driver, "Projects")
    ask(f"advance {12 * 3600}")
    driver.get(f"{BASE}/ui/p/shop")
    title_is(driver, "Sign in")
    print("the session ended after 12 hours of the gateway's clock", flush=True)


def throttled(driver):
    for _ in range(3):
        sign_in(driver, "not-a-viewer-token-at-all")
        alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
        assert "signs in no viewer" in alert, alert
    sign_in(driver, ALICE)
    alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert "Too many failed sign-ins" in alert, alert
    print("wrong tokens were refused, then throttled", flush=True)


def main():
    driver = browser()
    try:
        run(driver)
    except Exception:
        print(f"at {driver.current_url}, titled {driver.title!r}:", flush=True)
        print(driver.find_element(By.TAG_NAME, "body").text[:2000], flush=True)
        raise
    finally:
        driver.quit()


def run(driver):
    sign_in(driver, ALICE)
    title_is(driver, "Projects")
    driver.get(f"{BASE}/ui/p/billing")
    title_is(driver, "billing")
    accessible(driver)
    driver.save_screenshot(SCREENSHOT)
    job = live_update(driver)
    errors = console_errors(driver)
    assert not errors, errors
    sign_out(driver)
    walled_off(driver, job)
    sign_out(driver)
    old_cookie_refused(driver)
    expires(driver)
    throttled(driver)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
