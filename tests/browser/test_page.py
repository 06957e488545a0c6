"""The chat page (`GET /`) in a real browser: headless Chromium, driven by selenium, against
`cargo lambda watch` with the local table and the scripted model (see conftest.py).

The tests run in file order and share one browser: the first ones play the seed's walkthrough by
typing, the later ones reload, rename and delete what it made.
"""
import re
import time
import uuid
from pathlib import Path
import os

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import REPO, http

WAIT = 30
USER = "collin"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# What the tests made, for the later ones.
SEEN = {}

WALKTHROUGH_ONE = [
    ("Hello my name is Collin.", "Hello Collin! How can I assist you today?"),
    ("What is my name?", "Your name is Collin."),
]
WALKTHROUGH_GROUP = [
    ("Hello my name is Zach.", "Hello Zach! How can I assist you today?"),
    ("And I'm Matt", "Hello Matt! Nice to meet you too. How can I help you today?"),
    ("And I'm Collin, who all is here?",
     "Hello Collin! So far, we have Zach, Matt, and now you. How can I assist you all today?"),
]
MARKUP = "<b>hi</b><script>x</script>"


def wait(browser, until, timeout=WAIT, what=None):
    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(
        lambda d: until(d), message=what or "")


def js(browser, script, *args):
    return browser.execute_script(script, *args)


def load(browser, stack, query=""):
    browser.get(stack.url + "/" + query)
    wait(browser, lambda d: js(d, "return document.readyState") == "complete")
    # Record what the page sends to POST /chat (headers and body), to check its keys.
    js(browser, """
        window.__posts = [];
        const fetch0 = window.fetch.bind(window);
        window.fetch = (u, init) => {
          if (String(u).endsWith('/chat')) window.__posts.push({headers: init.headers, body: JSON.parse(init.body)});
          return fetch0(u, init);
        };""")


def posts(browser):
    return js(browser, "return window.__posts")


def set_user(browser, name):
    field = browser.find_element(By.ID, "user")
    field.clear()
    field.send_keys(name, Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, "who").text == f"Chatting as {name}")


def current_session(browser):
    return js(browser, "return new URLSearchParams(location.search).get('session')")


def replies(browser):
    """Each reply shown: state, text, and the line under it."""
    return js(browser, """
        return Array.from(document.querySelectorAll('#messages li.msg.bot'), li => ({
          state: li.dataset.state, text: li.querySelector('.text').textContent,
          note: (li.querySelector('.state') || {textContent: ''}).textContent}));""")


def exchanges(browser):
    """(message, reply) pairs shown in the open conversation, oldest first."""
    texts = js(browser, """return Array.from(document.querySelectorAll('#messages li.msg'),
        li => [li.classList.contains('user') ? 'user' : 'bot', li.querySelector('.text').textContent]);""")
    pairs = []
    for role, text in texts:
        if role == "user":
            pairs.append([text, None])
        else:
            pairs[-1][1] = text
    return [tuple(p) for p in pairs]


def send(browser, text):
    box = browser.find_element(By.ID, "message")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def say(browser, text, final=("saved", "error", "stopped")):
    """Types a message, sends it with Enter, and returns its reply once it has settled."""
    before = len(replies(browser))
    send(browser, text)
    return wait(browser, lambda d: (lambda r: r[before] if len(r) > before and r[before]["state"] in final else None)(replies(d)),
                what=f"a reply to {text!r}")


def sidebar(browser):
    return js(browser, """return Array.from(document.querySelectorAll('#sessions li'), li => ({
        id: li.dataset.session, name: li.querySelector('.name').textContent,
        current: li.getAttribute('aria-current') === 'true'}));""")


def stored_runs(stack, session_id):
    """Every stored run of a session, through the API (oldest first); None when unknown."""
    runs, cursor = [], None
    while True:
        query = f"?limit=200" + (f"&cursor={cursor}" if cursor else "")
        status, body = stack.api("GET", f"/sessions/{session_id}{query}")
        if status == 404:
            return None
        assert status == 200, body
        runs += body["runs"]
        cursor = body["next_cursor"]
        if not cursor:
            return runs


def test_the_page_is_served_self_contained_with_its_headers(stack):
    status, headers, body = http("GET", stack.url + "/")
    assert status == 200, body[:1000]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b'data-auth-mode="NONE"' in body
    assert len(body) < 48 * 1024, len(body)
    status, again, rest = http("GET", stack.url + "/", headers={"If-None-Match": headers["ETag"]})
    assert (status, rest) == (304, b"")
    assert again["ETag"] == headers["ETag"]
    status, _, _ = http("POST", stack.url + "/", body={})
    assert status == 405


def test_the_walkthrough_typed_into_the_page(stack, browser):
    load(browser, stack)
    # No user yet: the page asks for one before anything else.
    assert browser.switch_to.active_element.get_attribute("id") == "user"
    set_user(browser, USER)
    one = current_session(browser)
    assert UUID.match(one), one
    for message, reply in WALKTHROUGH_ONE:
        got = say(browser, message)
        assert (got["state"], got["text"], got["note"]) == ("saved", reply, "Saved")
    # The new conversation is listed, named by its first message.
    wait(browser, lambda d: [(s["id"], s["name"], s["current"]) for s in sidebar(d)]
         == [(one, WALKTHROUGH_ONE[0][0], True)])

    browser.find_element(By.ID, "new").click()
    group = current_session(browser)
    assert group != one and UUID.match(group)
    assert browser.find_element(By.ID, "title").text == "New conversation"
    for message, reply in WALKTHROUGH_GROUP:
        got = say(browser, message)
        assert (got["state"], got["text"]) == ("saved", reply)
    assert exchanges(browser) == WALKTHROUGH_GROUP
    wait(browser, lambda d: [s["id"] for s in sidebar(d)] == [group, one])
    shot = os.environ.get("PAGE_SCREENSHOT")
    if shot:  # the README's picture: 1280x800, mid-conversation
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        browser.find_element(By.ID, "message").send_keys("Who is here, again?")
        js(browser, "const l = document.getElementById('log'); l.scrollTop = l.scrollHeight")
        Path(REPO / shot).write_bytes(browser.get_screenshot_as_png())
        browser.find_element(By.ID, "message").clear()
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # Every message went with its own Idempotency-Key (a UUID), its owner and Accept.
    sent = posts(browser)
    assert [p["body"]["message"] for p in sent] == [m for m, _ in WALKTHROUGH_ONE + WALKTHROUGH_GROUP]
    keys = [p["headers"]["Idempotency-Key"] for p in sent]
    assert all(UUID.match(k) for k in keys) and len(set(keys)) == len(keys), keys
    assert all(p["body"]["owner"] == USER for p in sent)
    assert all(p["headers"]["Accept"] == "text/event-stream" for p in sent)
    # What the page showed is what was stored.
    assert [(r["input"], r["output"]) for r in stored_runs(stack, one)] == WALKTHROUGH_ONE
    assert [(r["input"], r["output"]) for r in stored_runs(stack, group)] == WALKTHROUGH_GROUP
    SEEN.update(one=one, group=group)


def test_a_reload_lists_both_conversations_with_their_history(stack, browser):
    one, group = SEEN["one"], SEEN["group"]
    browser.refresh()
    wait(browser, lambda d: [(s["id"], s["name"]) for s in sidebar(d)]
         == [(group, WALKTHROUGH_GROUP[0][0]), (one, WALKTHROUGH_ONE[0][0])])
    assert current_session(browser) == group
    wait(browser, lambda d: exchanges(d) == WALKTHROUGH_GROUP)
    assert {r["state"] for r in replies(browser)} == {"saved"}
    # Opening the other conversation from the sidebar shows its history and its link.
    browser.find_element(By.CSS_SELECTOR, f'#sessions li[data-session="{one}"] a').click()
    wait(browser, lambda d: exchanges(d) == WALKTHROUGH_ONE)
    assert current_session(browser) == one
    assert browser.find_element(By.ID, "title").text == WALKTHROUGH_ONE[0][0]
    # The conversation goes on with its memory.
    assert say(browser, "What is my name?")["text"] == "Your name is Collin."
    # Back goes to the group conversation; a link opens a conversation directly.
    browser.back()
    wait(browser, lambda d: exchanges(d) == WALKTHROUGH_GROUP)
    load(browser, stack, f"?session={one}")
    wait(browser, lambda d: len(exchanges(d)) == 3 and exchanges(d)[:2] == WALKTHROUGH_ONE)


def test_markup_in_messages_and_replies_is_shown_as_text(stack, browser):
    browser.find_element(By.ID, "new").click()
    got = say(browser, MARKUP)
    assert got["state"] == "saved"
    assert got["text"] == f"You said: {MARKUP} (I remember 0 earlier messages.)"
    markup = current_session(browser)
    SEEN["markup"] = markup

    def no_elements_made(d):
        return js(d, "return document.querySelectorAll('#messages b, #messages script, #sessions b, #sessions script').length") == 0

    assert no_elements_made(browser)
    assert MARKUP in browser.find_element(By.CSS_SELECTOR, "#messages li.msg.user .text").text
    wait(browser, lambda d: sidebar(d)[0]["name"] == MARKUP)
    # Read back from the history, it is still text.
    browser.refresh()
    wait(browser, lambda d: exchanges(d) == [(MARKUP, got["text"])])
    assert no_elements_made(browser)


def test_a_failed_turn_is_shown_as_not_saved_and_its_retry_is_stored_once(stack, browser):
    load(browser, stack)  # a new conversation
    session = current_session(browser)
    stack.script({"garbage": True})  # the model answers something that is no completion
    got = say(browser, "Hello my name is Ada.")
    assert got["state"] == "error"
    assert got["note"].startswith("Not saved: ") and "model_error" in got["note"], got
    assert stored_runs(stack, session) is None, "nothing stored"
    retry = browser.find_element(By.CSS_SELECTOR, "#messages li.msg.bot .retry")
    retry.click()
    wait(browser, lambda d: replies(d)[-1]["state"] == "saved")
    assert replies(browser)[-1]["text"] == "Hello Ada! How can I assist you today?"
    keys = [p["headers"]["Idempotency-Key"] for p in posts(browser)[-2:]]
    assert keys[0] == keys[1], "a retry sends the same key"
    assert [r["input"] for r in stored_runs(stack, session)] == ["Hello my name is Ada."]


def test_stop_then_retry_stores_the_run_once(stack, browser):
    """Stop aborts the request; the function finishes the turn anyway; Retry, with the same
    key, shows the stored reply without calling the model again."""
    session = current_session(browser)
    stack.script({"hang": 2})  # the model takes 2 s to answer
    send(browser, "Hello my name is Grace.")
    wait(browser, lambda d: replies(d)[-1]["state"] == "pending")
    stop = browser.find_element(By.ID, "stop")
    assert stop.is_displayed()
    stop.click()
    wait(browser, lambda d: replies(d)[-1]["state"] == "stopped")
    assert "not confirmed as saved" in replies(browser)[-1]["note"]
    assert not stop.is_displayed() and browser.find_element(By.ID, "send").is_enabled()
    # The function went on: the run is stored once the model answered.
    deadline = time.monotonic() + WAIT
    while len(stored_runs(stack, session)) < 2:
        assert time.monotonic() < deadline, "the stopped turn was not stored"
        time.sleep(0.2)
    calls = len(stack.model_calls())
    browser.find_element(By.CSS_SELECTOR, "#messages li.msg.bot:last-of-type .retry").click()
    wait(browser, lambda d: replies(d)[-1]["state"] == "saved")
    assert replies(browser)[-1]["text"] == "Hello Grace! Nice to meet you too. How can I help you today?"
    assert replies(browser)[-1]["note"] == "Saved (an earlier try had saved it)"
    assert len(stack.model_calls()) == calls, "the retry was answered from the stored run"
    assert [r["input"] for r in stored_runs(stack, session)] == [
        "Hello my name is Ada.", "Hello my name is Grace."]


def test_a_streamed_reply_grows_while_it_arrives(stack, browser):
    browser.find_element(By.ID, "new").click()
    session = current_session(browser)
    stack.script({"first_token_delay": 0.3, "word_delay": 0.08})
    # Every change of the reply's text, with when it happened.
    js(browser, """
        window.__samples = [];
        new MutationObserver(() => {
          const li = document.querySelector('#messages li.msg.bot:last-of-type');
          if (li) window.__samples.push([performance.now(), li.querySelector('.text').textContent.length, li.dataset.state]);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true, attributes: true});""")
    message = "Tell me about the sea, the sky, the wind and the long road home tonight."
    got = say(browser, message)
    assert got["state"] == "saved", got
    samples = js(browser, "return window.__samples")
    streaming = [(t, n) for t, n, s in samples if s == "streaming"]
    lengths = [n for _, n in streaming]
    assert len(set(lengths)) >= 8, samples
    assert lengths == sorted(lengths), "the text only grows"
    assert lengths[0] < len(got["text"]) / 3, "the first words came before the rest"
    assert streaming[-1][0] - streaming[0][0] > 500, "spread over time (ms)"
    assert [r["output"] for r in stored_runs(stack, session)] == [got["text"]]


def test_a_reply_failing_mid_stream_is_shown_as_not_saved(stack, browser):
    session = current_session(browser)
    before = [r["input"] for r in stored_runs(stack, session)]
    stack.script({"error_after": 4, "word_delay": 0.05})  # the model fails after four words
    got = say(browser, "Tell me about the moon and the tides, in many words.")
    assert got["state"] == "error", got
    assert got["note"].startswith("Not saved: "), got
    assert got["text"].startswith("You said: Tell"), "the words that came stay, marked not saved"
    assert [r["input"] for r in stored_runs(stack, session)] == before, "nothing stored"
    assert browser.find_elements(By.CSS_SELECTOR, "#messages li.msg.bot:last-of-type .retry")


def test_stop_ends_a_streamed_reply_where_it_is(stack, browser):
    session = current_session(browser)
    stack.script({"word_delay": 0.3})
    send(browser, "Tell me a long story about the sea and the sky and the stars, please.")
    wait(browser, lambda d: replies(d)[-1]["state"] == "streaming" and replies(d)[-1]["text"])
    browser.find_element(By.ID, "stop").click()
    wait(browser, lambda d: replies(d)[-1]["state"] == "stopped")
    shown = replies(browser)[-1]["text"]
    time.sleep(1)
    assert replies(browser)[-1]["text"] == shown, "nothing arrives after Stop"
    assert "not confirmed as saved" in replies(browser)[-1]["note"]
    browser.find_element(By.CSS_SELECTOR, "#messages li.msg.bot:last-of-type .retry").click()
    wait(browser, lambda d: replies(d)[-1]["state"] == "saved", timeout=60)
    inputs = [r["input"] for r in stored_runs(stack, session)]
    assert inputs.count("Tell me a long story about the sea and the sky and the stars, please.") == 1


def test_rename_and_delete(stack, browser):
    one, markup = SEEN["one"], SEEN["markup"]
    load(browser, stack, f"?session={one}")
    item = f'#sessions li[data-session="{one}"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, item + " .rename"))
    browser.find_element(By.CSS_SELECTOR, item + " .rename").click()
    field = browser.find_element(By.ID, "rename-input")
    assert browser.switch_to.active_element == field
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("Collin's <i>chat</i>", Keys.ENTER)
    wait(browser, lambda d: not d.find_element(By.ID, "rename-dialog").is_displayed())
    wait(browser, lambda d: {s["id"]: s["name"] for s in sidebar(d)}[one] == "Collin's <i>chat</i>")
    assert browser.find_element(By.ID, "title").text == "Collin's <i>chat</i>"
    status, body = stack.api("GET", f"/sessions?owner={USER}")
    assert {s["session_id"]: s["title"] for s in body["sessions"]}[one] == "Collin's <i>chat</i>"

    # Delete asks first; Escape (or Cancel) keeps the conversation.
    gone = f'#sessions li[data-session="{markup}"] .delete'
    browser.find_element(By.CSS_SELECTOR, gone).click()
    dialog = browser.find_element(By.ID, "delete-dialog")
    assert dialog.is_displayed() and MARKUP in dialog.text
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, lambda d: not dialog.is_displayed())
    assert stack.api("GET", f"/sessions/{markup}")[0] == 200
    browser.find_element(By.CSS_SELECTOR, gone).click()
    dialog.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait(browser, lambda d: markup not in [s["id"] for s in sidebar(d)])
    assert stack.api("GET", f"/sessions/{markup}")[0] == 404
    browser.refresh()
    wait(browser, lambda d: one in [s["id"] for s in sidebar(d)])
    names = {s["id"]: s["name"] for s in sidebar(browser)}
    assert markup not in names and names[one] == "Collin's <i>chat</i>"
    assert js(browser, "return document.querySelectorAll('#sessions i').length") == 0


def test_older_messages_load_on_scroll_up(stack, browser):
    session = "paged-" + uuid.uuid4().hex[:8]
    for i in range(65):
        status, body = stack.api("POST", "/chat", {"session_id": session, "message": f"message {i}", "owner": USER})
        assert status == 200, body
    load(browser, stack, f"?session={session}")
    shown = lambda d: [m for m, _ in exchanges(d)]
    wait(browser, lambda d: shown(d) == [f"message {i}" for i in range(35, 65)])
    # The newest are in view; scrolling up brings the earlier pages, keeping the place.
    assert js(browser, "const l = document.getElementById('log'); return l.scrollHeight - l.scrollTop - l.clientHeight") < 5
    for first in (5, 0):
        anchor = js(browser, "return document.querySelector('#messages li.msg').textContent")
        js(browser, "document.getElementById('log').scrollTop = 0")
        wait(browser, lambda d: shown(d)[0] == f"message {first}")
        top = js(browser, """const l = document.getElementById('log');
            const m = Array.from(document.querySelectorAll('#messages li.msg')).find(li => li.textContent === arguments[0]);
            return m.getBoundingClientRect().top - l.getBoundingClientRect().top;""", anchor)
        assert 0 < top < js(browser, "return document.getElementById('log').clientHeight"), \
            "the message that was at the top is still on screen, further down"
    assert shown(browser) == [f"message {i}" for i in range(65)]
    assert not browser.find_element(By.ID, "older").is_displayed()


def test_the_sidebar_pages_as_it_scrolls(stack, browser):
    owner = "pager-" + uuid.uuid4().hex[:6]
    made = []
    for i in range(27):
        session = f"{owner}-{i}"
        status, body = stack.api("POST", "/chat", {"session_id": session, "message": f"topic {i}", "owner": owner})
        assert status == 200, body
        made.append(session)
    load(browser, stack)
    set_user(browser, owner)
    wait(browser, lambda d: len(sidebar(d)) == 20)
    js(browser, "const s = document.getElementById('sidebar'); s.scrollTop = s.scrollHeight")
    wait(browser, lambda d: len(sidebar(d)) == 27)
    assert [s["id"] for s in sidebar(browser)] == made[::-1], "newest first, each once"
    assert not browser.find_element(By.ID, "more").is_displayed()
    set_user(browser, USER)
    wait(browser, lambda d: SEEN["one"] in [s["id"] for s in sidebar(d)])


def test_keyboard_labels_and_a_phone_screen(stack, browser):
    load(browser, stack, f"?session={SEEN['group']}")
    wait(browser, lambda d: exchanges(d) == WALKTHROUGH_GROUP)
    # Every control has a name a screen reader reads.
    unnamed = js(browser, """return Array.from(document.querySelectorAll('button, input, textarea, a'))
        .filter(e => e.offsetParent !== null || e.closest('dialog'))
        .filter(e => !(e.getAttribute('aria-label') || (e.labels && e.labels.length) || e.textContent.trim()))
        .map(e => e.outerHTML);""")
    assert unnamed == []
    # Keyboard only: the skip link, then typing and Enter.
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "message"
    browser.switch_to.active_element.send_keys("Who is here?", Keys.ENTER)
    wait(browser, lambda d: len(replies(d)) == 4 and replies(d)[-1]["state"] == "saved")
    assert replies(browser)[-1]["text"] == "So far, we have Zach, Matt, Collin."

    browser.set_window_size(360, 740)
    try:
        wait(browser, lambda d: js(d, "return innerWidth") <= 360)
        assert js(browser, "return document.documentElement.scrollWidth <= innerWidth"), "no sideways scrolling"
        menu = browser.find_element(By.ID, "menu")
        assert menu.is_displayed() and menu.get_attribute("aria-expanded") == "false"
        off = lambda d: js(d, "return document.getElementById('sidebar').getBoundingClientRect().right <= 0")
        wait(browser, off)  # it slides away (a short transition)
        menu.click()
        wait(browser, lambda d: not off(d) and js(d, "return document.getElementById('sidebar').getBoundingClientRect().left >= 0"))
        assert browser.switch_to.active_element.get_attribute("id") == "new"
        browser.switch_to.active_element.send_keys(Keys.ESCAPE)
        wait(browser, off)
        assert menu.get_attribute("aria-expanded") == "false"
        box = browser.find_element(By.ID, "message").rect
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360
    finally:
        browser.set_window_size(1280, 800)


def test_a_linked_conversation_stays_when_a_name_is_picked(stack, browser):
    """A shared link (a group thread) opened before a user name is picked: picking one keeps
    that conversation, shows it, and the message goes to it."""
    session = "linked-" + uuid.uuid4().hex[:8]
    status, body = stack.api("POST", "/chat", {"session_id": session, "message": WALKTHROUGH_GROUP[0][0], "owner": USER})
    assert status == 200, body
    load(browser, stack)
    js(browser, "localStorage.clear()")
    load(browser, stack, f"?session={session}")
    assert browser.switch_to.active_element.get_attribute("id") == "user"
    assert current_session(browser) == session
    # Typed before a name: the page asks for one and keeps the message in the box.
    send(browser, WALKTHROUGH_GROUP[1][0])
    assert posts(browser) == []
    assert browser.find_element(By.ID, "who").text == "Pick a user name first."
    set_user(browser, USER)
    assert current_session(browser) == session
    wait(browser, lambda d: exchanges(d) == WALKTHROUGH_GROUP[:1])
    assert browser.find_element(By.ID, "message").get_attribute("value") == WALKTHROUGH_GROUP[1][0]
    before = len(replies(browser))
    browser.find_element(By.ID, "message").send_keys(Keys.ENTER)
    got = wait(browser, lambda d: (lambda r: r[before] if len(r) > before and r[before]["state"] != "pending"
                                   and r[before]["state"] != "streaming" else None)(replies(d)))
    assert (got["state"], got["text"]) == ("saved", WALKTHROUGH_GROUP[1][1])
    assert [p["body"]["session_id"] for p in posts(browser)] == [session]
    assert current_session(browser) == session
    assert exchanges(browser) == WALKTHROUGH_GROUP[:2]
    assert [r["input"] for r in stored_runs(stack, session)] == [m for m, _ in WALKTHROUGH_GROUP[:2]]
    wait(browser, lambda d: sidebar(d) and sidebar(d)[0]["id"] == session and sidebar(d)[0]["current"])
