"use strict";
// session-chat's page: a client of the public API and nothing more. Everything from the
// server or the user is written with textContent, never parsed as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const mode = document.documentElement.dataset.authMode; // NONE, JWT or AWS_IAM
  // The API's base: the page is served at its root, under any stage or prefix.
  const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const el = {
    menu: $("menu"), identity: $("identity"), userBox: $("user-box"), user: $("user"),
    tokenBox: $("token-box"), token: $("token"), signOut: $("sign-out"), who: $("who"),
    iam: $("iam"), sidebar: $("sidebar"), newButton: $("new"), sessions: $("sessions"),
    sessionsStatus: $("sessions-status"), more: $("more"), title: $("title"), log: $("log"),
    older: $("older"), logStatus: $("log-status"), messages: $("messages"),
    composer: $("composer"), message: $("message"), send: $("send"), stop: $("stop"),
    renameDialog: $("rename-dialog"), renameForm: $("rename-form"),
    renameInput: $("rename-input"), renameError: $("rename-error"),
    deleteDialog: $("delete-dialog"), deleteForm: $("delete-form"),
    deleteText: $("delete-text"), deleteError: $("delete-error"),
  };
  const PAGE_RUNS = 30;
  const LIST_PAGE = 20;
  const state = {
    owner: "", token: "",
    sessions: new Map(), // session id -> {item, li}
    list: {cursor: null, done: false, loading: false, failed: false, gen: 0},
    current: null, fresh: false, view: 0,
    older: {cursor: null, loading: false, failed: false},
    sending: null, // the exchange whose reply is on its way in this view
  };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function ready() {
    return mode === "NONE" ? !!state.owner : mode === "JWT" ? !!state.token : false;
  }

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (mode === "JWT" && state.token) h.Authorization = "Bearer " + state.token;
    return h;
  }

  function url(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") q.set(k, v);
    }
    const s = q.toString();
    return base + path + (s ? "?" + s : "");
  }

  const sessionPath = (id) => "sessions/" + encodeURIComponent(id);
  const ownerParam = () => (mode === "NONE" ? {owner: state.owner} : {});

  async function errorOf(response) {
    let code = "http_" + response.status;
    let message = response.statusText || "the request failed";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) { /* not JSON: keep the status */ }
    if (response.status === 401) refused();
    return new ApiError(response.status, code, message);
  }

  async function api(method, path, options) {
    const {params, body} = options || {};
    const init = {method, headers: headers()};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url(path, params), init);
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }

  function describe(e) {
    if (e instanceof ApiError) return e.message;
    return "the server could not be reached (" + (e && e.message ? e.message : "network error") + ")";
  }

  // ---- who is chatting

  function setupIdentity() {
    if (mode === "JWT") {
      el.tokenBox.hidden = false;
      state.token = sessionStorage.getItem("session-chat.token") || "";
    } else if (mode === "NONE") {
      el.userBox.hidden = false;
      state.owner = localStorage.getItem("session-chat.user") || "";
      el.user.value = state.owner;
    } else {
      el.iam.hidden = false;
      for (const x of [el.message, el.send, el.newButton]) x.disabled = true;
    }
    showWho();
  }

  function showWho(text) {
    el.signOut.hidden = !(mode === "JWT" && state.token);
    if (text) el.who.textContent = text;
    else if (mode === "NONE") el.who.textContent = state.owner ? "Chatting as " + state.owner : "Pick a user name to start.";
    else if (mode === "JWT") el.who.textContent = state.token ? "Signed in (the token stays in this tab)" : "Paste a token to start.";
    else el.who.textContent = "";
  }

  function refused() {
    if (mode === "JWT") showWho("The token was refused (expired or not valid here): paste a new one.");
  }

  el.identity.addEventListener("submit", (event) => {
    event.preventDefault();
    if (mode === "NONE") {
      const name = el.user.value.trim();
      if (!/^[A-Za-z0-9_.:@-]{1,128}$/.test(name) || /^\.+$/.test(name)) {
        showWho("A user name is 1-128 letters, digits or - _ . : @");
        el.user.focus();
        return;
      }
      const changed = name !== state.owner;
      const first = !state.owner;
      state.owner = name;
      localStorage.setItem("session-chat.user", name);
      showWho();
      if (changed) {
        loadSessions(true);
        // A first name keeps the conversation the page was opened on (a shared link); another
        // user starts a new one.
        if (first && !state.fresh) openSession(state.current, false);
        else newConversation(false);
      }
    } else if (mode === "JWT") {
      const token = el.token.value.trim().replace(/^Bearer\s+/i, "");
      if (!token) return showWho("Paste a token first.");
      state.token = token;
      sessionStorage.setItem("session-chat.token", token);
      el.token.value = "";
      showWho();
      loadSessions(true);
      if (state.current && !state.fresh) openSession(state.current, false);
    }
    el.message.focus();
  });

  el.signOut.addEventListener("click", () => {
    state.token = "";
    sessionStorage.removeItem("session-chat.token");
    showWho();
    loadSessions(true);
    newConversation(false);
    el.token.focus();
  });

  // ---- the sidebar: the user's conversations, newest first, paged as it scrolls

  const label = (item) => item.title || item.preview || item.session_id;

  function renderSession(item) {
    let entry = state.sessions.get(item.session_id);
    if (!entry) {
      entry = {item, li: document.createElement("li")};
      state.sessions.set(item.session_id, entry);
    }
    entry.item = item;
    const li = entry.li;
    li.dataset.session = item.session_id;
    const link = document.createElement("a");
    link.href = "?session=" + encodeURIComponent(item.session_id);
    link.className = "open";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label(item);
    const meta = document.createElement("span");
    meta.className = "meta";
    const runs = item.runs || 0;
    let when = "";
    if (item.updated_at) {
      const at = new Date(item.updated_at * 1000);
      when = " · " + (at.toDateString() === new Date().toDateString()
        ? at.toLocaleTimeString([], {timeStyle: "short"}) : at.toLocaleDateString([], {dateStyle: "medium"}));
    }
    meta.textContent = runs + (runs === 1 ? " message" : " messages") + when;
    link.append(name, meta);
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      closeSidebar();
      openSession(item.session_id, true);
      el.message.focus();
    });
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "rename";
    rename.textContent = "✎";
    rename.title = "Rename";
    rename.setAttribute("aria-label", "Rename “" + label(item) + "”");
    rename.addEventListener("click", () => askRename(item.session_id, rename));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "✕";
    remove.title = "Delete";
    remove.setAttribute("aria-label", "Delete “" + label(item) + "”");
    remove.addEventListener("click", () => askDelete(item.session_id, remove));
    li.replaceChildren(link, rename, remove);
    markCurrent(li);
    return li;
  }

  function markCurrent(li) {
    if (li.dataset.session === state.current) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
  }

  async function loadSessions(reset) {
    const list = state.list;
    if (reset) {
      list.gen++;
      Object.assign(list, {cursor: null, done: false, loading: false, failed: false});
      state.sessions.clear();
      el.sessions.replaceChildren();
      el.more.hidden = true;
    }
    if (list.loading || list.done) return;
    if (!ready()) {
      el.sessionsStatus.textContent = mode === "AWS_IAM" ? "Not available with AWS_IAM (see above)."
        : mode === "JWT" ? "Sign in to see your conversations." : "Pick a user name to see your conversations.";
      return;
    }
    const gen = list.gen;
    list.loading = true;
    list.failed = false;
    el.sessionsStatus.textContent = "Loading conversations…";
    try {
      const page = await api("GET", "sessions", {params: {...ownerParam(), limit: LIST_PAGE, cursor: list.cursor}});
      if (gen !== list.gen) return;
      for (const item of page.sessions) {
        if (!state.sessions.has(item.session_id)) el.sessions.append(renderSession(item));
      }
      list.cursor = page.next_cursor;
      list.done = !page.next_cursor;
      el.sessionsStatus.textContent = state.sessions.size ? "" : "No conversations yet.";
    } catch (e) {
      if (gen !== list.gen) return;
      list.failed = true;
      if (e.code === "listing_disabled") {
        list.done = true;
        el.sessionsStatus.textContent = "This deployment does not list conversations (no owner index); open one by its link.";
      } else {
        el.sessionsStatus.textContent = "Could not load conversations: " + describe(e);
      }
    } finally {
      if (gen === list.gen) {
        list.loading = false;
        el.more.hidden = list.done;
        if (!list.failed) requestAnimationFrame(() => visible(el.more, el.sidebar) && loadSessions());
      }
    }
  }

  function visible(target, root) {
    if (target.hidden) return false;
    const a = target.getBoundingClientRect();
    const b = root.getBoundingClientRect();
    return a.bottom > b.top && a.top < b.bottom && a.height > 0;
  }

  el.more.addEventListener("click", () => loadSessions());
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && !state.list.failed) loadSessions();
  }, {root: el.sidebar, rootMargin: "200px"}).observe(el.more);

  // A turn saved: the conversation moves to the top of the list.
  function noteActivity(id, message) {
    const entry = state.sessions.get(id);
    const item = entry ? {...entry.item} : {session_id: id, title: null, preview: message.slice(0, 100), runs: 0};
    item.runs = (item.runs || 0) + 1;
    item.updated_at = Math.floor(Date.now() / 1000);
    el.sessions.prepend(renderSession(item));
    el.sessionsStatus.textContent = "";
    if (id === state.current) showTitle();
  }

  // ---- the open conversation

  function showTitle() {
    const entry = state.sessions.get(state.current);
    const text = state.fresh && !entry ? "New conversation" : entry ? label(entry.item) : state.current;
    el.title.textContent = text;
    document.title = text + " · session-chat";
  }

  function setUrl(id, push) {
    const u = new URL(location.href);
    u.searchParams.set("session", id);
    if (u.href !== location.href) history[push ? "pushState" : "replaceState"](null, "", u);
  }

  function resetView(id, fresh) {
    state.view++;
    state.current = id;
    state.fresh = fresh;
    state.sending = null;
    state.older = {cursor: null, loading: false, failed: false};
    el.older.hidden = true;
    el.messages.replaceChildren();
    el.logStatus.textContent = "";
    busy(false);
    for (const entry of state.sessions.values()) markCurrent(entry.li);
    showTitle();
  }

  function newConversation(push) {
    const id = uuid();
    resetView(id, true);
    setUrl(id, push);
    el.logStatus.textContent = ready() || mode === "AWS_IAM" ? "Say something to start a new conversation." : "";
  }

  async function openSession(id, push) {
    resetView(id, false);
    setUrl(id, push);
    if (!ready()) {
      if (mode !== "AWS_IAM") el.logStatus.textContent = mode === "JWT" ? "Sign in to open this conversation." : "Pick a user name to open this conversation.";
      return;
    }
    const view = state.view;
    el.logStatus.textContent = "Loading the conversation…";
    try {
      const page = await api("GET", sessionPath(id), {params: {before: "end", limit: PAGE_RUNS}});
      if (view !== state.view) return;
      el.logStatus.textContent = "";
      for (const run of page.runs) el.messages.append(...runNodes(run));
      state.older.cursor = page.prev_cursor;
      el.older.hidden = !page.prev_cursor;
      el.log.scrollTop = el.log.scrollHeight;
    } catch (e) {
      if (view !== state.view) return;
      el.logStatus.textContent = e.code === "session_not_found"
        ? "No messages here yet. Say something to start this conversation."
        : "Could not load this conversation: " + describe(e);
    }
  }

  async function loadOlder() {
    const older = state.older;
    if (!older.cursor || older.loading) return;
    const view = state.view;
    older.loading = true;
    older.failed = false;
    el.older.disabled = true;
    el.older.textContent = "Loading earlier messages…";
    try {
      const page = await api("GET", sessionPath(state.current), {params: {before: older.cursor, limit: PAGE_RUNS}});
      if (view !== state.view) return;
      const fromBottom = el.log.scrollHeight - el.log.scrollTop;
      const nodes = document.createDocumentFragment();
      for (const run of page.runs) nodes.append(...runNodes(run));
      el.messages.prepend(nodes);
      el.log.scrollTop = el.log.scrollHeight - fromBottom; // keep what the reader was looking at
      older.cursor = page.prev_cursor;
      el.logStatus.textContent = "";
    } catch (e) {
      if (view !== state.view) return;
      older.failed = true;
      el.logStatus.textContent = "Could not load earlier messages: " + describe(e);
    } finally {
      if (view === state.view) {
        older.loading = false;
        el.older.disabled = false;
        el.older.textContent = "Earlier messages";
        el.older.hidden = !older.cursor;
        if (!older.failed) requestAnimationFrame(() => visible(el.older, el.log) && loadOlder());
      }
    }
  }

  el.older.addEventListener("click", () => loadOlder());
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && !state.older.failed) loadOlder();
  }, {root: el.log, rootMargin: "100px"}).observe(el.older);

  function messageNode(role, text) {
    const li = document.createElement("li");
    li.className = "msg " + role;
    const who = document.createElement("span");
    who.className = "who-said";
    who.textContent = role === "user" ? "You" : "Model";
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    li.append(who, body);
    return li;
  }

  function runNodes(run) {
    const reply = messageNode("bot", run.output);
    reply.dataset.state = "saved";
    reply.dataset.run = run.id;
    return [messageNode("user", run.input), reply];
  }

  // The line under a reply that says what became of it.
  function setState(li, name, text, action) {
    li.dataset.state = name;
    let line = li.querySelector(".state");
    if (!line) {
      line = document.createElement("p");
      line.className = "state";
      li.append(line);
    }
    const words = document.createElement("span");
    words.textContent = text;
    line.replaceChildren(words);
    if (action) line.append(action);
    if (name === "error" || name === "stopped") line.setAttribute("role", "alert");
    else line.removeAttribute("role");
  }

  const nearBottom = () => el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 80;

  function busy(on) {
    el.stop.hidden = !on;
    el.send.disabled = on || mode === "AWS_IAM";
  }

  // ---- sending: every message carries an Idempotency-Key, kept for its retries

  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el.message.value;
    if (!text.trim()) return;
    if (!ready()) {
      showWho(mode === "JWT" ? "Paste a token first." : mode === "NONE" ? "Pick a user name first." : "");
      (mode === "JWT" ? el.token : el.user).focus();
      return;
    }
    if (state.sending) return;
    el.message.value = "";
    el.logStatus.textContent = "";
    const exchange = {id: state.current, text, key: uuid(), view: state.view};
    exchange.reply = messageNode("bot", "");
    el.messages.append(messageNode("user", text), exchange.reply);
    el.log.scrollTop = el.log.scrollHeight;
    turn(exchange);
  });

  el.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.composer.requestSubmit();
    } else if (event.key === "Escape" && state.sending) {
      state.sending.controller.abort();
    }
  });

  el.stop.addEventListener("click", () => {
    if (state.sending) state.sending.controller.abort();
    el.message.focus();
  });

  async function turn(ex) {
    const controller = new AbortController();
    ex.controller = controller;
    const mine = ex.view === state.view;
    if (mine) {
      state.sending = ex;
      busy(true);
    }
    const text = ex.reply.querySelector(".text");
    const words = document.createTextNode("");
    text.replaceChildren(words);
    ex.reply.setAttribute("aria-busy", "true");
    setState(ex.reply, "pending", "Waiting for the reply…");
    const body = {session_id: ex.id, message: ex.text, ...(mode === "NONE" ? {owner: state.owner} : {})};
    let outcome;
    try {
      const response = await fetch(url("chat"), {
        method: "POST",
        headers: headers({"Content-Type": "application/json", "Accept": "text/event-stream", "Idempotency-Key": ex.key}),
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw await errorOf(response);
      if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        outcome = await readStream(response, ex, words);
        outcome.replayed = response.headers.get("idempotent-replayed") === "true";
      } else {
        const done = await response.json();
        const follow = ex.view === state.view && nearBottom();
        words.data = done.reply;
        if (follow) el.log.scrollTop = el.log.scrollHeight;
        outcome = {done, replayed: response.headers.get("idempotent-replayed") === "true"};
      }
    } catch (e) {
      outcome = {error: e};
    }
    finish(ex, outcome, controller.signal.aborted);
  }

  // Server-sent events read from the response body: delta, done, error.
  async function readStream(response, ex, words) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let name = "message";
    let data = [];
    let result = null;
    const dispatch = () => {
      if (data.length) {
        let payload = null;
        try { payload = JSON.parse(data.join("\n")); } catch (_) { /* not JSON: ignored */ }
        if (name === "delta" && payload && typeof payload.text === "string") {
          const follow = nearBottom();
          words.appendData(payload.text);
          if (ex.reply.dataset.state !== "streaming") setState(ex.reply, "streaming", "Writing…");
          if (follow && ex.view === state.view) el.log.scrollTop = el.log.scrollHeight;
        } else if (name === "done" && payload) {
          result = {done: payload};
        } else if (name === "error") {
          const err = (payload && payload.error) || {};
          result = {error: new ApiError(200, err.code || "stream_error", err.message || "the reply failed")};
        }
      }
      name = "message";
      data = [];
    };
    while (!result) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      for (;;) {
        const at = buffer.search(/\r\n|\r|\n/);
        // A lone CR at the end may be the first half of CRLF: wait for the next chunk.
        if (at < 0 || (at === buffer.length - 1 && buffer[at] === "\r")) break;
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + (buffer.startsWith("\r\n", at) ? 2 : 1));
        if (line === "") dispatch();
        else if (line[0] !== ":") {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let v = colon < 0 ? "" : line.slice(colon + 1);
          if (v[0] === " ") v = v.slice(1);
          if (field === "event") name = v;
          else if (field === "data") data.push(v);
        }
        if (result) break;
      }
    }
    if (result) reader.cancel().catch(() => {});
    return result || {cut: true};
  }

  function finish(ex, outcome, stopped) {
    const reply = ex.reply;
    const follow = ex.view === state.view && nearBottom();
    reply.removeAttribute("aria-busy");
    if (outcome.done) {
      const words = reply.querySelector(".text");
      if (typeof outcome.done.reply === "string" && words.textContent !== outcome.done.reply) {
        words.textContent = outcome.done.reply; // what was stored is what counts
      }
      reply.dataset.run = outcome.done.run_id || "";
      setState(reply, "saved", outcome.replayed ? "Saved (an earlier try had saved it)" : "Saved");
      if (ex.view === state.view) state.fresh = false;
      noteActivity(ex.id, ex.text);
    } else {
      const e = outcome.error;
      const refusal = e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 429 && e.status !== 408;
      let text;
      if (stopped) {
        text = "Stopped: not confirmed as saved (if the model had finished, it was stored; Retry shows it without storing it twice).";
      } else if (outcome.cut) {
        text = "The reply was cut off: not confirmed as saved. Retry is safe (same Idempotency-Key, stored at most once).";
      } else if (e instanceof ApiError && e.code === "save_unconfirmed") {
        text = "Maybe saved: " + e.message;
      } else if (e instanceof ApiError) {
        text = "Not saved: " + e.message + " (" + e.code + ")";
      } else {
        text = "Not confirmed as saved: " + describe(e) + ". Retry is safe (same Idempotency-Key, stored at most once).";
      }
      let retry = null;
      if (!refusal) {
        retry = document.createElement("button");
        retry.type = "button";
        retry.className = "retry";
        retry.textContent = "Retry";
        retry.addEventListener("click", () => {
          if (state.sending || ex.view !== state.view) return;
          turn(ex);
          el.message.focus();
        });
      }
      setState(reply, stopped ? "stopped" : "error", text, retry);
    }
    if (follow) el.log.scrollTop = el.log.scrollHeight;
    if (state.sending === ex) {
      state.sending = null;
      busy(false);
    }
  }

  // ---- rename and delete, each in a dialog

  let opener = null;
  for (const dialog of [el.renameDialog, el.deleteDialog]) {
    dialog.querySelector(".cancel").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      if (opener && opener.isConnected) opener.focus();
      else el.message.focus();
      opener = null;
    });
  }

  function askRename(id, from) {
    const entry = state.sessions.get(id);
    if (!entry) return;
    opener = from;
    el.renameDialog.dataset.session = id;
    el.renameInput.value = entry.item.title || label(entry.item);
    el.renameError.textContent = "";
    el.renameDialog.showModal();
    el.renameInput.select();
  }

  el.renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = el.renameDialog.dataset.session;
    const title = el.renameInput.value.trim();
    if (!title) {
      el.renameError.textContent = "A title cannot be blank.";
      return;
    }
    try {
      const answer = await api("PATCH", sessionPath(id), {body: {title}});
      const entry = state.sessions.get(id);
      if (entry) {
        renderSession({...entry.item, title: answer.title});
        opener = entry.li.querySelector(".rename");
      }
      if (id === state.current) showTitle();
      el.renameDialog.close();
    } catch (e) {
      el.renameError.textContent = "Not renamed: " + describe(e);
    }
  });

  function askDelete(id, from) {
    const entry = state.sessions.get(id);
    if (!entry) return;
    opener = from;
    el.deleteDialog.dataset.session = id;
    el.deleteText.textContent = "“" + label(entry.item) + "” and its whole history will be deleted. This cannot be undone.";
    el.deleteError.textContent = "";
    el.deleteDialog.showModal();
    el.deleteDialog.querySelector(".cancel").focus();
  }

  el.deleteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = el.deleteDialog.dataset.session;
    try {
      // 202: the conversation is gone, its cleanup goes on; asking again finishes it.
      for (let i = 0; i < 5; i++) {
        const answer = await api("DELETE", sessionPath(id));
        if (!answer || answer.complete !== false) break;
      }
    } catch (e) {
      if (e.code !== "session_not_found") {
        el.deleteError.textContent = "Not deleted: " + describe(e);
        return;
      }
    }
    const entry = state.sessions.get(id);
    const name = entry ? label(entry.item) : id;
    if (entry) entry.li.remove();
    state.sessions.delete(id);
    opener = el.newButton;
    el.deleteDialog.close();
    el.sessionsStatus.textContent = "Deleted “" + name + "”.";
    if (id === state.current) newConversation(true);
  });

  // ---- layout: the sidebar slides in on narrow screens

  function closeSidebar() {
    el.sidebar.classList.remove("open");
    el.menu.setAttribute("aria-expanded", "false");
  }

  el.menu.addEventListener("click", () => {
    const open = !el.sidebar.classList.contains("open");
    el.sidebar.classList.toggle("open", open);
    el.menu.setAttribute("aria-expanded", String(open));
    if (open) el.newButton.focus();
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && el.sidebar.classList.contains("open")) {
      closeSidebar();
      el.menu.focus();
    }
  });

  el.newButton.addEventListener("click", () => {
    closeSidebar();
    newConversation(true);
    el.message.focus();
  });

  function route() {
    const id = new URLSearchParams(location.search).get("session");
    if (id && id === state.current) return;
    if (id) openSession(id, false);
    else newConversation(false);
  }

  window.addEventListener("popstate", route);
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    el.message.focus();
  });

  setupIdentity();
  route();
  loadSessions(true);
  if (mode === "NONE" && !state.owner) el.user.focus();
  else if (mode === "JWT" && !state.token) el.token.focus();
})();
