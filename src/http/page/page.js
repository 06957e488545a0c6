"use strict";
// session-chat's page: a client of the public API and nothing more. Everything from the
// server or the user is written as text (textContent, and replies formatted with DOM calls),
// never parsed as HTML.
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
    deleteText: $("delete-text"), deleteError: $("delete-error"), notice: $("notice"),
    runDeleteDialog: $("run-delete-dialog"), runDeleteForm: $("run-delete-form"),
    runDeleteError: $("run-delete-error"),
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
    loading: false, // the open conversation is being read (again)
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
    state.loading = false;
    state.older = {cursor: null, loading: false, failed: false};
    el.older.hidden = true;
    el.messages.replaceChildren();
    el.logStatus.textContent = "";
    el.notice.textContent = "";
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
    state.loading = true;
    try {
      const page = await api("GET", sessionPath(id), {params: {before: "end", limit: PAGE_RUNS}});
      if (view !== state.view) return;
      el.logStatus.textContent = "";
      for (const run of page.runs) el.messages.append(...runNodes(run));
      state.older.cursor = page.prev_cursor;
      el.older.hidden = !page.prev_cursor;
      resume(id, page.runs);
      lastTools();
      el.log.scrollTop = el.log.scrollHeight;
    } catch (e) {
      if (view !== state.view) return;
      const none = e.code === "session_not_found";
      el.logStatus.textContent = none
        ? "No messages here yet. Say something to start this conversation."
        : "Could not load this conversation: " + describe(e);
      if (none && resume(id, [])) el.logStatus.textContent = "";
    } finally {
      if (view === state.view) state.loading = false;
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

  // ---- replies as formatted text: a small Markdown subset built with DOM calls only (the
  // model's text is never parsed as HTML; markup in it stays characters)

  function make(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }

  // A backtick fence's line holds no other backtick (else it is inline code).
  const FENCE = /^ {0,3}(`{3,}(?=[^`]*$)|~{3,})\s*([^`\s]*)/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
  const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const QUOTE = /^ {0,3}> ?/;
  const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?: +|$)/;
  // A link, [text](url), and a bare web address, each tried where it may start (sticky). Both
  // are linear: their alternatives cannot match the same characters.
  const LINK = /\[((?:[^[\]\n]|\[[^[\]\n]*\])*)\]\(\s*([^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+"[^"\n]*")?\s*\)/y;
  const BARE = /https?:\/\/[^\s<>]*[^\s<>.,:;!?'")\]*_~]/y;
  const ESCAPABLE = /[!-/:-@[-`{-~]/;

  const starts = (line) => FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);

  function markdown(text) {
    const box = document.createDocumentFragment();
    blocks(text.split(/\r\n?|\n/), box, 0);
    return box;
  }

  // A heading's text without its closing #s (by hand: a pattern for them backtracks).
  function headingText(text) {
    let t = text.trimEnd();
    let j = t.length;
    while (j > 0 && t[j - 1] === "#") j--;
    if (j < t.length && (j === 0 || /\s/.test(t[j - 1]))) t = t.slice(0, j).trimEnd();
    return t;
  }

  // Quotes and lists nest up to this depth; deeper, their lines are paragraphs' text.
  const MAX_DEPTH = 12;

  function blocks(lines, parent, depth) {
    const deep = depth >= MAX_DEPTH;
    for (let i = 0; i < lines.length;) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i++;
      } else if ((m = FENCE.exec(line))) {
        const close = new RegExp("^ {0,3}" + m[1][0] + "{" + m[1].length + ",}\\s*$");
        const code = [];
        for (i++; i < lines.length && !close.test(lines[i]); i++) code.push(lines[i]);
        i++;
        parent.append(codeBlock(code.join("\n"), m[2]));
      } else if (RULE.test(line)) {
        parent.append(make("hr"));
        i++;
      } else if ((m = HEADING.exec(line))) {
        // Under the page's own h1 and h2: # is h3, ## h4, and so on to h6.
        const h = make("h" + Math.min(6, m[1].length + 2));
        inline(headingText(m[2] || ""), h);
        parent.append(h);
        i++;
      } else if (!deep && QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].replace(QUOTE, ""));
        const q = make("blockquote");
        blocks(quoted, q, depth + 1);
        parent.append(q);
      } else if (!deep && ITEM.test(line)) {
        i = list(lines, i, parent, depth);
      } else {
        const para = [line.trim()];
        for (i++; i < lines.length && lines[i].trim() && (deep || !starts(lines[i])); i++) para.push(lines[i].trim());
        const p = make("p");
        inline(para.join("\n"), p);
        parent.append(p);
      }
    }
  }

  // A list from line i: its items at the first item's indent; what is indented under an item
  // (a nested list, a code block, more paragraphs) is that item's. Returns the next line.
  function list(lines, i, parent, depth) {
    const head = ITEM.exec(lines[i]);
    const indent = head[1].length;
    const ordered = /\d/.test(head[2]);
    const box = make(ordered ? "ol" : "ul");
    if (ordered && parseInt(head[2], 10) !== 1) box.start = parseInt(head[2], 10);
    parent.append(box);
    let m;
    while (i < lines.length && (m = ITEM.exec(lines[i])) && m[1].length === indent && /\d/.test(m[2]) === ordered) {
      const col = m[0].length;
      const body = [lines[i].slice(col)];
      let gap = false;
      for (i++; i < lines.length; i++) {
        const line = lines[i];
        const lead = line.length - line.trimStart().length;
        const sub = ITEM.test(line);
        if (!line.trim()) body.push("");
        else if (lead >= col || (sub && lead > indent)) body.push(line.slice(Math.min(lead, col)));
        else if (!gap && !starts(line)) body.push(line.trim());
        else break;
        gap = !line.trim();
      }
      const li = make("li");
      blocks(body, li, depth + 1);
      box.append(li);
    }
    return i;
  }

  // Text joined to the text before it (one text node, not a run of them).
  function add(parent, text) {
    const last = parent.lastChild;
    if (!text) return;
    if (last && last.nodeType === 3) last.appendData(text);
    else parent.append(text);
  }

  // The length of the run of `mark` at i.
  function runAt(text, i, mark) {
    let j = i;
    while (text[j] === mark) j++;
    return j - i;
  }

  // Where a run of exactly n `mark`s closes what opened before `from` (for emphasis, after a
  // character that is neither space nor the mark), or -1.
  function closer(text, from, mark, n, emphasis) {
    for (let j = text.indexOf(mark, from); j >= 0; j = text.indexOf(mark, j)) {
      const len = runAt(text, j, mark);
      if (len === n && (!emphasis || !/\s/.test(text[j - 1]))) return j;
      j += len;
    }
    return -1;
  }

  // Inline marks, scanned once from left to right: an escaped mark; `code`; [text](url); a
  // bare web address; *, **, *** (or _) emphasis. A mark that never closes is text, and is
  // remembered as such (`open`), so no input makes this scan more than about linear.
  function inline(text, parent, inLink) {
    const open = new Set(); // runs known to have no closer further on
    let at = 0;
    let i = 0;
    const flush = (to) => add(parent, text.slice(at, to));
    while (i < text.length) {
      const c = text[i];
      let m;
      if (c === "\\" && ESCAPABLE.test(text[i + 1] || "")) {
        flush(i);
        add(parent, text[i + 1]);
        i += 2;
        at = i;
      } else if (c === "`") {
        const n = runAt(text, i, c);
        const end = open.has(c + n) ? -1 : closer(text, i + n, c, n, false);
        if (end < 0) {
          open.add(c + n);
          i += n;
          continue;
        }
        flush(i);
        const t = text.slice(i + n, end);
        parent.append(make("code", "", /^ .*\S.* $/s.test(t) ? t.slice(1, -1) : t));
        i = end + n;
        at = i;
      } else if ((c === "[" && ((LINK.lastIndex = i), (m = LINK.exec(text)))) ||
                 (c === "h" && ((BARE.lastIndex = i), (m = BARE.exec(text))))) {
        const bare = c === "h";
        const href = !inLink && safeUrl(bare ? m[0] : m[2]);
        if (!href) {
          // Not a web address: shown as written (a bare one's text is plain anyway).
          i += bare ? m[0].length : 1;
          continue;
        }
        flush(i);
        const a = make("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        if (bare) a.append(m[0]);
        else inline(m[1], a, true);
        parent.append(a);
        i += m[0].length;
        at = i;
      } else if (c === "*" || c === "_") {
        const n = runAt(text, i, c);
        const next = text[i + n] || "";
        // No emphasis inside a word (snake_case), with more than three marks, or before a space.
        const inWord = c === "_" && /\w/.test(text[i - 1] || "");
        if (n > 3 || inWord || !next || /\s/.test(next) || open.has(c + n)) {
          i += n;
          continue;
        }
        const end = closer(text, i + n + 1, c, n, true);
        if (end < 0 || (c === "_" && /\w/.test(text[end + n] || ""))) {
          if (end < 0) open.add(c + n);
          i += n;
          continue;
        }
        flush(i);
        let outer = make(n === 1 ? "em" : "strong");
        parent.append(outer);
        if (n === 3) outer.append(outer = make("em"));
        inline(text.slice(i + n, end), outer, inLink);
        i = end + n;
        at = i;
      } else {
        i++;
      }
    }
    flush(text.length);
  }

  function safeUrl(text) {
    try {
      const u = new URL(text);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : "";
    } catch (_) {
      return ""; // relative, or not an address
    }
  }

  function codeBlock(text, lang) {
    const box = make("div", "code");
    const bar = make("div", "code-bar");
    const note = make("span", "copied");
    note.setAttribute("role", "status");
    const copy = make("button", "copy", "Copy");
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy the code" + (lang ? " (" + lang + ")" : ""));
    let timer = 0;
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(text);
        note.textContent = "Copied";
      } catch (_) {
        note.textContent = "Could not copy";
      }
      clearTimeout(timer);
      timer = setTimeout(() => { note.textContent = ""; }, 2500);
    });
    bar.append(make("span", "lang", lang), note, copy);
    const pre = make("pre");
    pre.append(make("code", "", text));
    box.append(bar, pre);
    return box;
  }

  // A reply's text, formatted; `raw` keeps what was written.
  function showReply(li, raw) {
    const box = li.querySelector(".text");
    box.raw = raw;
    try {
      box.replaceChildren(markdown(raw));
    } catch (_) {
      box.textContent = raw; // whatever the formatter met, the reply is shown
    }
  }

  function messageNode(role, text) {
    const li = document.createElement("li");
    li.className = "msg " + role;
    const who = document.createElement("span");
    who.className = "who-said";
    who.textContent = role === "user" ? "You" : "Model";
    const body = document.createElement("div");
    body.className = "text";
    li.append(who, body);
    if (role === "user") body.textContent = text;
    else showReply(li, text);
    return li;
  }

  function runNodes(run) {
    const user = messageNode("user", run.input);
    const reply = messageNode("bot", run.output);
    reply.dataset.state = "saved";
    runTools(user, reply, {id: run.id, alternatives: run.alternatives || [], version: run.version || 1,
      rating: run.feedback ? run.feedback.rating : null});
    return [user, reply];
  }

  // The line under a reply that says what became of it.
  function setState(li, name, text, action) {
    li.dataset.state = name;
    let line = li.querySelector(".state");
    if (!line) {
      line = document.createElement("p");
      line.className = "state";
      li.insertBefore(line, li.querySelector(".tools"));
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
    el.messages.classList.toggle("busy", on);
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
    if (state.loading) {
      el.notice.textContent = "Wait until the conversation is loaded, then send.";
      return;
    }
    el.message.value = "";
    el.logStatus.textContent = "";
    const exchange = {id: state.current, text, key: uuid(), view: state.view, say: {message: text}};
    exchange.user = messageNode("user", text);
    exchange.reply = messageNode("bot", "");
    el.messages.append(exchange.user, exchange.reply);
    el.notice.textContent = "";
    lastTools();
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

  // What a reply under way starts with: its Stop, its place emptied, its state.
  function begin(ex, text) {
    const controller = new AbortController();
    ex.controller = controller;
    if (ex.view === state.view) {
      state.sending = ex;
      busy(true);
    }
    ex.raw = "";
    ex.last = null;
    showReply(ex.reply, "");
    const focused = ex.reply.contains(document.activeElement);
    for (const li of [ex.user, ex.reply]) {
      for (const old of li.querySelectorAll(".tools, form.comment")) old.remove();
    }
    if (focused) el.message.focus(); // its button is gone
    ex.reply.setAttribute("aria-busy", "true");
    setState(ex.reply, "pending", text);
    return controller.signal;
  }

  async function turn(ex) {
    ex.run = null;
    const signal = begin(ex, ex.say.regenerate ? "Writing another version…" : "Waiting for the reply…");
    const body = {session_id: ex.id, ...ex.say, ...(mode === "NONE" ? {owner: state.owner} : {})};
    let outcome;
    try {
      const response = await fetch(url("chat"), {
        method: "POST",
        headers: headers({"Content-Type": "application/json", "Accept": "text/event-stream", "Idempotency-Key": ex.key}),
        body: JSON.stringify(body),
        signal,
      });
      if (!response.ok) throw await errorOf(response);
      if ((response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        outcome = await readStream(response, ex);
        outcome.replayed = response.headers.get("idempotent-replayed") === "true";
      } else {
        outcome = {done: await response.json(), replayed: response.headers.get("idempotent-replayed") === "true"};
      }
    } catch (e) {
      outcome = {error: e};
    }
    // The connection dropped after the reply began: it is followed from the last piece shown.
    if (lost(outcome) && ex.run && !signal.aborted && !leaving) {
      outcome = await follow(ex, signal, "The connection dropped: following the reply…");
    }
    finish(ex, outcome, signal.aborted);
  }

  // No end came: the stream stopped short, or the network failed under it.
  const lost = (o) => o.cut || (o.error && !(o.error instanceof ApiError));

  // ---- replies that survive a reload: a streamed turn is remembered in this tab (its run,
  // message, key, and the last piece's id) from its `started` event to its end

  const MEMORY = "session-chat.reply.";
  let leaving = false; // the page is being left: what is under way stays remembered
  window.addEventListener("pagehide", () => { leaving = true; });
  window.addEventListener("pageshow", () => { leaving = false; });

  function remember(ex) {
    try {
      sessionStorage.setItem(MEMORY + ex.id, JSON.stringify({run: ex.run, text: ex.text, key: ex.key,
        say: ex.say, was: ex.was || null, last: ex.last}));
    } catch (_) { /* no storage: the reply just cannot be followed after a reload */ }
  }

  function recall(id) {
    try {
      const m = JSON.parse(sessionStorage.getItem(MEMORY + id));
      return m && typeof m.run === "string" && typeof m.text === "string" && m.say ? m : null;
    } catch (_) {
      return null;
    }
  }

  function forget(ex) {
    const m = recall(ex.id);
    if (m && m.key === ex.key) sessionStorage.removeItem(MEMORY + ex.id);
  }

  // The conversation just read: a remembered reply that is not in it (not saved yet) is shown
  // again and followed from its start; one that is, forgotten. True when one is followed.
  function resume(id, runs) {
    const m = recall(id);
    if (!m) return false;
    const ex = {id, text: m.text, key: m.key, say: m.say, run: m.run, view: state.view};
    if (runs.some((r) => r.id === m.run || (r.alternatives || []).includes(m.run))) {
      forget(ex);
      return false;
    }
    // A new version goes where the one it replaces is shown (the runs after an edited one go);
    // while it is written the history has neither (its place is the new one's), so it comes last.
    const was = m.was && typeof m.was.id === "string" && Array.isArray(m.was.alternatives) ? m.was : null;
    const reply = was && el.messages.querySelector("li.msg.bot[data-run=\"" + CSS.escape(was.id) + "\"]");
    const user = reply && reply.previousElementSibling;
    ex.was = was;
    if (reply && reply.run && user && user.dataset.run === was.id) {
      Object.assign(ex, {user, reply, was: reply.run});
      if (m.say.edit) {
        ex.user.querySelector(".text").textContent = m.text;
        while (reply.nextElementSibling) reply.nextElementSibling.remove();
      }
    } else {
      ex.user = messageNode("user", m.text);
      ex.reply = messageNode("bot", "");
      el.messages.append(ex.user, ex.reply);
    }
    (async () => {
      const signal = begin(ex, "Resuming the reply…");
      finish(ex, await follow(ex, signal), signal.aborted);
    })();
    return true;
  }

  // GET .../runs/{run}/stream: the reply's pieces after the last one shown (all of them when
  // none was), then its end (done, or the turn's error event). Asked again while it ends short
  // but brings more pieces (the server's invocation ran out of time, or the network failed).
  async function follow(ex, signal, note) {
    let outcome;
    for (let idle = 0; idle < 2; ) {
      if (note) setState(ex.reply, "pending", note);
      const last = ex.last;
      try {
        const path = sessionPath(ex.id) + "/runs/" + encodeURIComponent(ex.run) + "/stream";
        const response = await fetch(url(path, {after: ex.last}), {headers: headers({"Accept": "text/event-stream"}), signal});
        if (!response.ok) throw await errorOf(response);
        outcome = await readStream(response, ex);
      } catch (e) {
        outcome = {error: e};
      }
      if (signal.aborted || leaving || !lost(outcome)) break;
      idle = ex.last === last ? idle + 1 : 0;
      if (idle < 2) await new Promise((done) => setTimeout(done, 500));
    }
    // Not followed to its end (no such reply, or no answer): said as a reply cut off.
    return outcome.done || (outcome.error instanceof ApiError && outcome.error.status === 200) ? outcome : {cut: true};
  }

  // Server-sent events read from the response body: started, delta (numbered by `id:`), done, error.
  // The reply formatted again from its whole text, at most once a frame while it grows.
  // A long reply is formatted less often: the wait is four times what the last format took,
  // so formatting never holds the page more than a fifth of the time.
  function draw(ex) {
    if (ex.frame) return;
    ex.frame = setTimeout(() => {
      ex.frame = 0;
      const follow = ex.view === state.view && nearBottom();
      const started = performance.now();
      showReply(ex.reply, ex.raw);
      ex.cost = performance.now() - started;
      if (follow) el.log.scrollTop = el.log.scrollHeight;
    }, Math.max(16, Math.min(1000, 4 * (ex.cost || 0))));
  }

  async function readStream(response, ex) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let name = "message";
    let data = [];
    let id = null;
    let result = null;
    const dispatch = () => {
      if (data.length) {
        let payload = null;
        try { payload = JSON.parse(data.join("\n")); } catch (_) { /* not JSON: ignored */ }
        if (name === "started" && payload && typeof payload.run_id === "string") {
          ex.run = payload.run_id;
          remember(ex);
        } else if (name === "delta" && payload && typeof payload.text === "string") {
          ex.raw += payload.text;
          if (/^\d+$/.test(id || "")) {
            ex.last = Number(id);
            if (ex.run && !ex.controller.signal.aborted) remember(ex);
          }
          draw(ex);
          if (ex.reply.dataset.state !== "streaming") setState(ex.reply, "streaming", "Writing…");
        } else if (name === "done" && payload) {
          result = {done: payload};
        } else if (name === "error") {
          const err = (payload && payload.error) || {};
          result = {error: new ApiError(200, err.code || "stream_error", err.message || "the reply failed")};
        }
      }
      name = "message";
      data = [];
      id = null;
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
          else if (field === "id") id = v;
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
    clearTimeout(ex.frame);
    ex.frame = 0;
    if (!leaving) forget(ex);
    // What was stored is what counts; otherwise the words that came.
    if (outcome.done && typeof outcome.done.reply === "string") ex.raw = outcome.done.reply;
    showReply(reply, ex.raw);
    if (ex.was && !outcome.done) {
      versionFailed(ex, outcome, stopped);
    } else if (outcome.done) {
      // A new version is the newest at its place: the others, the replaced one among them, come first.
      const others = ex.was ? ex.was.alternatives.slice() : [];
      if (ex.was) others.splice(ex.was.version - 1, 0, ex.was.id);
      runTools(ex.user, reply, {id: outcome.done.run_id || "", alternatives: others, version: others.length + 1, rating: null});
      lastTools();
      const saved = ex.say.regenerate ? "Saved as a new version" : ex.say.edit ? "Saved (edited)" : "Saved";
      setState(reply, "saved", outcome.replayed ? saved + " (an earlier try had saved it)" : saved);
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

  // ---- a run's tools: versions (< 2/3 >), regenerate, edit, rating, delete

  function button(cls, text, label, onClick) {
    const b = make("button", cls, text);
    b.type = "button";
    if (label) b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }

  // The versions at a run's place, oldest first, itself among them.
  function versionsOf(run) {
    const all = run.alternatives.slice();
    all.splice(run.version - 1, 0, run.id);
    return all;
  }

  function runTools(user, reply, run) {
    reply.run = run;
    reply.dataset.run = run.id;
    user.dataset.run = run.id;
    const bar = make("div", "tools");
    const all = versionsOf(run);
    if (all.length > 1) {
      const group = make("span", "versions");
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", "Version " + run.version + " of " + all.length);
      const prev = button("prev", "‹", "Previous version", () => select(all[run.version - 2]));
      const next = button("next", "›", "Next version", () => select(all[run.version]));
      prev.disabled = run.version === 1;
      next.disabled = run.version === all.length;
      const count = make("span", "count", run.version + "/" + all.length);
      count.setAttribute("aria-hidden", "true");
      group.append(prev, count, next);
      bar.append(group);
    }
    bar.append(button("regenerate", "↻ Regenerate", "Regenerate this reply", () => regenerate(user, reply)));
    for (const [rating, text, label] of [["up", "👍", "Good reply"], ["down", "👎", "Bad reply"]]) {
      const b = button("rate " + rating, text, label, () => rate(reply, rating));
      b.setAttribute("aria-pressed", String(run.rating === rating));
      bar.append(b);
    }
    bar.append(button("delete-run", "Delete", "Delete this message and its reply", (event) => askDeleteRun(reply, event.currentTarget)));
    const old = reply.querySelector(".tools");
    if (old) old.replaceWith(bar);
    else reply.append(bar);
    const mine = make("div", "tools");
    mine.append(button("edit", "Edit", "Edit this message", () => startEdit(user)));
    const was = user.querySelector(".tools");
    if (was) was.replaceWith(mine);
    else user.append(mine);
  }

  // Regenerate is offered on the last reply only.
  function lastTools() {
    const all = el.messages.querySelectorAll("li.msg.bot .regenerate");
    all.forEach((b, i) => { b.hidden = i !== all.length - 1 || el.messages.lastElementChild !== b.closest("li"); });
  }

  function canChange() {
    if (state.sending) {
      el.notice.textContent = "Wait for the reply being written (or stop it) first.";
      return false;
    }
    if (state.loading) {
      el.notice.textContent = "Wait until the conversation is loaded.";
      return false;
    }
    if (!ready()) return false;
    el.notice.textContent = "";
    return true;
  }

  // The server regenerates the conversation's last run: first make sure it is the one shown
  // (another tab or member may have written since).
  async function regenerate(user, reply) {
    if (!canChange() || !reply.run) return;
    const view = state.view;
    state.loading = true;
    let last = null;
    try {
      const page = await api("GET", sessionPath(state.current), {params: {before: "end", limit: 1}});
      last = page.runs.length ? page.runs[page.runs.length - 1].id : null;
    } catch (e) {
      el.notice.textContent = "Not regenerated: " + describe(e);
      return;
    } finally {
      if (view === state.view) state.loading = false;
    }
    if (view !== state.view || state.sending) return;
    if (last !== reply.run.id) {
      await reload();
      el.notice.textContent = "The conversation changed elsewhere: shown as stored now. Regenerate again if you like.";
      return;
    }
    turn({id: state.current, text: user.querySelector(".text").textContent, key: uuid(), view: state.view,
      say: {regenerate: true}, user, reply, was: reply.run});
  }

  // A small form under a message: a text field, a close button and Send. Escape closes it;
  // with `enterSends`, Enter sends (Shift+Enter adds a line), as in the message box.
  function textForm(cls, label, closer, onClose, onSend, enterSends) {
    const form = make("form", cls);
    const field = make("textarea");
    field.setAttribute("aria-label", label);
    const send = make("button", "", "Send");
    send.type = "submit";
    form.append(field, make("div", "actions"));
    form.lastChild.append(button("cancel", closer[0], closer[1], onClose), send);
    field.addEventListener("keydown", (event) => {
      if (enterSends && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        onClose();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      onSend(field.value);
    });
    return {form, field};
  }

  function startEdit(user) {
    if (!canChange() || user.querySelector("form.edit")) return;
    const box = user.querySelector(".text");
    const tools = user.querySelector(".tools");
    const close = () => {
      form.remove();
      box.hidden = false;
      if (tools) tools.hidden = false;
      const again = user.querySelector(".edit");
      if (again) again.focus();
    };
    const {form, field} = textForm("edit", "Your message, edited", ["Cancel", ""], close, (text) => {
      const reply = user.nextElementSibling;
      if (!text.trim()) {
        el.notice.textContent = "A message cannot be blank: write something, or press Escape to keep it.";
        return;
      }
      if (!reply || !reply.run || !canChange()) return;
      form.remove();
      box.hidden = false;
      box.textContent = text;
      // The runs after it leave the path (kept on the server as the other branch).
      while (reply.nextElementSibling) reply.nextElementSibling.remove();
      turn({id: state.current, text, key: uuid(), view: state.view, say: {edit: reply.run.id, message: text},
        user, reply, was: reply.run});
      el.message.focus();
    }, true);
    field.value = box.textContent;
    field.rows = Math.min(8, field.value.split("\n").length + 1);
    box.hidden = true;
    if (tools) tools.hidden = true;
    user.append(form);
    field.focus();
  }

  // A regeneration or an edit that did not come back saved: what is shown is read again from
  // the server (a reply cut off may have been stored after all; a refusal changed nothing).
  async function versionFailed(ex, outcome, stopped) {
    const e = outcome.error;
    const what = ex.say.regenerate ? "regenerated" : "edited";
    const text = stopped ? "Stopped: the message was not " + what + " (unless the model had finished)."
      : outcome.cut ? "The reply was cut off: not confirmed as " + what + "."
      : e instanceof ApiError && e.code !== "save_unconfirmed" ? "Not " + what + ": " + e.message + " (" + e.code + ")."
      : "Not confirmed as " + what + ": " + describe(e) + ".";
    if (ex.view !== state.view) return;
    await reload();
    // An edit's text is not lost: it waits in the message box.
    const kept = ex.say.edit && !el.message.value.trim();
    if (kept) el.message.value = ex.text;
    el.notice.textContent = text + " Shown as stored." + (kept ? " Your edited message is in the message box." : "");
  }

  // The open conversation read again, the view staying where it was.
  async function reload() {
    const top = el.log.scrollTop;
    await openSession(state.current, false);
    el.log.scrollTop = top;
  }

  const runPath = (run) => sessionPath(state.current) + "/runs/" + encodeURIComponent(run.id);

  async function select(id) {
    if (!canChange() || !id) return;
    try {
      await api("POST", sessionPath(state.current) + "/select", {body: {run_id: id}});
    } catch (e) {
      el.notice.textContent = "Could not switch versions: " + describe(e);
      return;
    }
    await reload();
    // Focus stays on the switcher of the same place, now showing the selected version.
    const li = el.messages.querySelector("li.msg.bot[data-run=\"" + CSS.escape(id) + "\"]");
    const target = li && (li.querySelector(".versions .next:not(:disabled)") || li.querySelector(".versions .prev"));
    if (target) target.focus();
  }

  async function rate(reply, rating, comment) {
    const run = reply.run;
    if (!run || !ready()) return false;
    try {
      await api("PUT", runPath(run) + "/feedback", {body: comment ? {rating, comment} : {rating}});
    } catch (e) {
      el.notice.textContent = "Not rated: " + describe(e);
      return false;
    }
    run.rating = rating;
    el.notice.textContent = comment ? "Thanks: your comment is kept with the reply." : "";
    for (const b of reply.querySelectorAll(".tools .rate")) b.setAttribute("aria-pressed", String(b.classList.contains(rating)));
    if (!comment) askComment(reply, rating);
    return true;
  }

  // After a rating, a comment may follow (optional; kept with the rating).
  function askComment(reply, rating) {
    const old = reply.querySelector("form.comment");
    if (old) old.remove();
    const done = () => {
      form.remove();
      const back = reply.querySelector(".tools .rate." + rating);
      if (back) back.focus();
    };
    const label = rating === "up" ? "What was good? (optional)" : "What was wrong? (optional)";
    const {form, field} = textForm("comment", label, ["Close", "Close the comment"], done, async (text) => {
      const comment = text.trim();
      if (!comment) return done();
      if (await rate(reply, rating, comment)) done();
    }, false);
    field.rows = 2;
    field.maxLength = 2000;
    field.placeholder = label;
    reply.append(form);
  }

  let doomed = null; // the reply whose run the delete dialog is about
  function askDeleteRun(reply, from) {
    if (!canChange() || !reply.run) return;
    doomed = reply;
    opener = from;
    el.runDeleteError.textContent = "";
    el.runDeleteDialog.showModal();
    el.runDeleteDialog.querySelector(".cancel").focus();
  }

  el.runDeleteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reply = doomed;
    if (!reply || !reply.run) return el.runDeleteDialog.close();
    const confirm = el.runDeleteForm.querySelector("button.danger");
    if (confirm.disabled) return; // one delete at a time
    confirm.disabled = true;
    try {
      await api("DELETE", runPath(reply.run));
    } catch (e) {
      if (e.code !== "run_not_found") {
        el.runDeleteError.textContent = "Not deleted: " + describe(e);
        return;
      }
    } finally {
      confirm.disabled = false;
    }
    // The path closes over it: the runs after it stay.
    const user = reply.previousElementSibling;
    const after = reply.nextElementSibling;
    if (user && user.dataset.run === reply.run.id) user.remove();
    reply.remove();
    doomed = null;
    opener = after ? after.querySelector("button") : null;
    el.runDeleteDialog.close();
    el.notice.textContent = "Message deleted.";
    lastTools();
    loadSessions(true); // its count, and its preview if it was the first message
  });

  // ---- rename and delete, each in a dialog

  let opener = null;
  for (const dialog of [el.renameDialog, el.deleteDialog, el.runDeleteDialog]) {
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
