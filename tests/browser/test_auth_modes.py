"""The page in the other auth modes: a token with JWT, a plain explanation with AWS_IAM.

`cargo lambda watch` has no API Gateway authorizer, so in JWT mode every API call is refused
(401): enough to check that the page sends the pasted token and says when it is refused.
"""
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from test_page import load, posts, replies, say, sidebar, wait, js

TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjb2xsaW4ifQ.c2ln"


def test_jwt_mode_takes_a_token_for_this_tab_and_sends_it(jwt_stack, browser):
    load(browser, jwt_stack)
    assert browser.find_element(By.ID, "token").is_displayed()
    assert not browser.find_element(By.ID, "user").is_displayed()
    assert browser.switch_to.active_element.get_attribute("id") == "token"
    wait(browser, lambda d: d.find_element(By.ID, "sessions-status").text == "Sign in to see your conversations.")
    browser.switch_to.active_element.send_keys("Bearer " + TOKEN, Keys.ENTER)
    assert js(browser, "return sessionStorage.getItem('session-chat.token')") == TOKEN
    assert js(browser, "return localStorage.length") == 0, "nothing kept beyond the tab"
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    # No authorizer here: the API refuses, and the page says so.
    wait(browser, lambda d: "refused" in d.find_element(By.ID, "who").text)
    got = say(browser, "Hello my name is Collin.")
    assert got["state"] == "error" and "(unauthorized)" in got["note"], got
    sent = posts(browser)[-1]
    assert sent["headers"]["Authorization"] == "Bearer " + TOKEN
    assert "owner" not in sent["body"], "the owner is the token's subject"
    assert sidebar(browser) == []
    browser.find_element(By.ID, "sign-out").click()
    assert js(browser, "return sessionStorage.getItem('session-chat.token')") is None
    assert browser.find_element(By.ID, "who").text == "Paste a token to start."


def test_iam_mode_says_plainly_that_a_browser_cannot_sign(iam_stack, browser):
    js(browser, "localStorage.clear(); sessionStorage.clear()")
    load(browser, iam_stack)
    notice = browser.find_element(By.ID, "iam")
    assert notice.is_displayed()
    assert "cannot" in notice.text and "SigV4" in notice.text and "AuthMode=JWT" in notice.text
    assert not browser.find_element(By.ID, "message").is_enabled()
    assert not browser.find_element(By.ID, "send").is_enabled()
    assert not browser.find_element(By.ID, "new").is_enabled()
    assert browser.find_element(By.ID, "sessions-status").text == "Not available with AWS_IAM (see above)."
    assert js(browser, "return window.__posts.length") == 0


def test_jwt_a_linked_conversation_stays_when_signing_in(jwt_stack, browser):
    load(browser, jwt_stack)
    js(browser, "sessionStorage.clear()")
    load(browser, jwt_stack, "?session=shared-thread-1")
    assert browser.switch_to.active_element.get_attribute("id") == "token"
    browser.switch_to.active_element.send_keys(TOKEN, Keys.ENTER)
    assert js(browser, "return new URLSearchParams(location.search).get('session')") == "shared-thread-1"
    # Signing in reads the linked conversation (refused here); a message sent while it loads
    # is held back, so wait until the read has settled.
    wait(browser, lambda d: d.find_element(By.ID, "log-status").text.startswith("Could not load this conversation"))
    got = say(browser, "Hello my name is Collin.")
    assert got["state"] == "error" and "(unauthorized)" in got["note"], got
    assert posts(browser)[-1]["body"]["session_id"] == "shared-thread-1"
    assert js(browser, "return new URLSearchParams(location.search).get('session')") == "shared-thread-1"
    browser.find_element(By.ID, "sign-out").click()
