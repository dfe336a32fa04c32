// ragmap's page. Everything that comes from crawled pages or from the model
// is put in the page as text (textContent, text nodes), never parsed as HTML.
"use strict";
(function () {
  const T = {
    en: {
      tagline: "Answers from your indexed corpus, with sources.",
      question: "Question", hint: "Enter sends; Shift+Enter starts a new line.",
      what: "Mode", answer: "Answer", searchOnly: "Search only", retrieval: "Retrieval",
      send: "Ask", search: "Search", stop: "Stop", reset: "New conversation",
      settings: "Settings", key: "API key (kept for this tab only)",
      conversation: "Conversation", passages: "Retrieved passages", close: "Close",
      you: "You", ragmap: "ragmap", source: "Source", searching: "Searching and answering…",
      searchingOnly: "Searching…", done: "Answer complete.", stopped: "Stopped.",
      found: (n) => n + " passages found.", none: "No passages found.",
      health: (h) => h.documents + " documents, " + h.chunks + " chunks · " + h.model,
      needKey: "This server needs an API key: enter it under Settings.",
      failed: "Request failed", cited: "cited", searched: "Searched for: ",
      resetDone: "New conversation started.", cut: "The answer broke off.",
    },
    zh: {
      tagline: "根据已索引的资料回答，并注明出处。",
      question: "问题", hint: "回车发送，Shift+回车换行。",
      what: "模式", answer: "回答", searchOnly: "仅检索", retrieval: "检索方式",
      send: "提问", search: "检索", stop: "停止", reset: "新对话",
      settings: "设置", key: "API 密钥（仅保存在本标签页）",
      conversation: "对话", passages: "检索到的段落", close: "关闭",
      you: "你", ragmap: "ragmap", source: "来源", searching: "正在检索并回答…",
      searchingOnly: "正在检索…", done: "回答完毕。", stopped: "已停止。",
      found: (n) => "找到 " + n + " 个段落。", none: "没有找到段落。",
      health: (h) => h.documents + " 篇文档，" + h.chunks + " 个片段 · " + h.model,
      needKey: "此服务器需要 API 密钥：请在“设置”中填写。",
      failed: "请求失败", cited: "已引用", searched: "检索词：",
      resetDone: "已开始新对话。", cut: "回答中断了。",
    },
  };
  const $ = (id) => document.getElementById(id);
  const form = $("ask"), q = $("q"), status = $("status"), turns = $("turns");
  const results = $("results"), keyInput = $("key"), stopBtn = $("stop"), sendBtn = $("send");
  const modeLabel = $("mode-label");
  let lang = localStorage.getItem("ragmap.lang") ||
    ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");
  let history = []; // {role, content} pairs sent back as the conversation
  let sources = []; // of the answer shown last, by citation number
  let busy = null; // AbortController of the running request
  let lastHealth = null;
  const MAX_TURNS = 8;

  const t = (k) => T[lang][k];
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  };
  const say = (text, alert) => {
    status.textContent = text;
    status.className = alert ? "error" : "";
  };
  // Only http(s) addresses become links: a page's own URL could be javascript:.
  const webUrl = (u) => typeof u === "string" && /^https?:\/\//i.test(u) ? u : null;
  const kind = () => form.elements.kind.value;

  function applyLang() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
    const other = lang === "zh" ? "en" : "zh";
    $("lang").textContent = other === "zh" ? "中文" : "English";
    $("lang").lang = other === "zh" ? "zh-CN" : "en";
    sendBtn.textContent = kind() === "search" ? t("search") : t("send");
    if (lastHealth) $("health").textContent = t("health")(lastHealth);
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem("ragmap.key");
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  // An error response's message (OpenAI-style `{error: {message}}`).
  async function failure(r) {
    if (r.status === 401) {
      $("settings").open = true;
      return t("needKey");
    }
    let message = "";
    try { message = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    return t("failed") + " (" + r.status + ")" + (message ? ": " + message : "");
  }

  // The answer as text nodes, with each [n] (or [n, m]) whose source exists a
  // button; returns the numbers cited.
  function renderAnswer(box, text, srcs) {
    box.textContent = "";
    const cited = new Set();
    const re = /\[(\d+(?:\s*[,，、]\s*\d+)*)\]/g;
    let at = 0, m;
    while ((m = re.exec(text))) {
      const nums = m[1].split(/\s*[,，、]\s*/).map(Number);
      if (!nums.every((n) => srcs[n - 1])) continue;
      box.append(document.createTextNode(text.slice(at, m.index)));
      for (const n of nums) { box.append(citeButton(n, srcs)); cited.add(n); }
      at = m.index + m[0].length;
    }
    box.append(document.createTextNode(text.slice(at)));
    return cited;
  }

  function citeButton(n, srcs) {
    const b = el("button", "cite", "[" + n + "]");
    b.type = "button";
    b.dataset.n = n;
    b.setAttribute("aria-label", t("source") + " " + n + ": " + srcs[n - 1].title);
    b.setAttribute("aria-controls", "passage");
    b.addEventListener("click", () => showPassage(srcs[n - 1], n, b));
    return b;
  }

  let returnFocus = null;
  function showPassage(s, n, from) {
    const box = $("passage");
    $("passage-h").textContent = (n ? "[" + n + "] " : "") + (s.title || s.path || "");
    $("passage-meta").textContent = [s.heading, s.path].filter(Boolean).join(" · ");
    const link = $("passage-link"), url = webUrl(s.url || s.source);
    link.textContent = url || s.path || s.source || "";
    if (url) link.href = url; else link.removeAttribute("href");
    $("passage-text").textContent = s.text || s.snippet || "";
    box.hidden = false;
    returnFocus = from || null;
    box.focus();
    for (const li of results.children) li.classList.toggle("current", li.dataset.n === String(n));
  }

  function closePassage() {
    $("passage").hidden = true;
    if (returnFocus && document.contains(returnFocus)) returnFocus.focus();
  }

  // The retrieved passages, in order; answer sources carry `n`, search results do not.
  function renderResults(items, cited) {
    results.textContent = "";
    items.forEach((s, i) => {
      const n = s.n || i + 1;
      const li = el("li", cited && cited.has(n) ? "cited" : "");
      li.dataset.n = n;
      const head = el("div", "title");
      const url = webUrl(s.url || s.source);
      const title = s.title || s.path || "";
      if (url) {
        const a = el("a", "", title);
        a.href = url;
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        head.append(a);
      } else head.append(el("span", "", title));
      if (cited && cited.has(n)) head.append(el("span", "badge", t("cited")));
      li.append(head);
      const meta = [s.heading, s.path].filter(Boolean).join(" · ");
      if (meta) li.append(el("div", "muted", meta));
      li.append(el("div", "text", s.text || s.snippet || ""));
      const open = el("button", "more", t("source") + " " + n);
      open.type = "button";
      open.addEventListener("click", () => showPassage(s, n, open));
      li.append(open);
      results.append(li);
    });
  }

  function addTurn(question) {
    const li = el("li", "turn");
    const you = el("div", "who", t("you")), who = el("div", "who", t("ragmap"));
    you.dataset.i18n = "you";
    who.dataset.i18n = "ragmap";
    li.append(you, el("div", "q", question));
    const box = el("div", "a");
    box.setAttribute("aria-live", "polite");
    box.setAttribute("aria-busy", "true");
    li.append(who, box);
    turns.append(li);
    return { li, box };
  }

  function setBusy(controller) {
    busy = controller;
    stopBtn.hidden = !controller;
    sendBtn.disabled = !!controller;
  }

  // Reads an SSE body and calls onEvent with each event's data.
  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      buf += decoder.decode(value || new Uint8Array(), { stream: !done });
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const raw = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = raw.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data && onEvent(data) === false) return;
      }
      if (done) return;
    }
  }

  async function ask(question) {
    const { li, box } = addTurn(question);
    const controller = new AbortController();
    setBusy(controller);
    say(t("searching"));
    const messages = history.concat([{ role: "user", content: question }]);
    let text = "", final = null, error = null;
    const live = document.createTextNode("");
    box.append(live);
    try {
      const r = await fetch("v1/chat/completions", {
        method: "POST", headers: headers(), signal: controller.signal,
        body: JSON.stringify({ model: "ragmap", stream: true, messages }),
      });
      if (!r.ok) throw new Error(await failure(r));
      await readEvents(r.body, (data) => {
        if (data === "[DONE]") return false;
        let ev;
        try { ev = JSON.parse(data); } catch (_) { return; }
        if (ev.error) { error = ev.error.message || t("failed"); return false; }
        const piece = ev.choices && ev.choices[0] && ev.choices[0].delta && ev.choices[0].delta.content;
        if (piece) { text += piece; live.data = text; }
        if (ev.sources) final = ev;
      });
    } catch (e) {
      error = controller.signal.aborted ? null : (e && e.message) || String(e);
      if (controller.signal.aborted) say(t("stopped"));
    } finally {
      setBusy(null);
      box.setAttribute("aria-busy", "false");
    }
    if (!final && !error && !controller.signal.aborted) error = t("cut");
    sources = final ? final.sources : [];
    const cited = renderAnswer(box, text, sources);
    if (final && final.ragmap && final.ragmap.search && final.ragmap.search !== question) {
      li.append(el("div", "muted", t("searched") + final.ragmap.search +
        (final.ragmap.translation ? " / " + final.ragmap.translation : "")));
    }
    renderResults(sources, cited);
    if (error) {
      li.append(el("div", "error", error));
      say(error, true);
    } else if (final) {
      say(t("done"));
      history.push({ role: "user", content: question }, { role: "assistant", content: text });
      history = history.slice(-2 * MAX_TURNS);
    }
  }

  async function search(question) {
    const controller = new AbortController();
    setBusy(controller);
    say(t("searchingOnly"));
    const body = { query: question, k: 10 };
    if ($("mode").value) body.mode = $("mode").value;
    try {
      const r = await fetch("api/search", {
        method: "POST", headers: headers(), signal: controller.signal, body: JSON.stringify(body),
      });
      if (!r.ok) throw new Error(await failure(r));
      const items = (await r.json()).results || [];
      renderResults(items, null);
      say(items.length ? t("found")(items.length) : t("none"));
    } catch (e) {
      say(controller.signal.aborted ? t("stopped") : (e && e.message) || String(e), !controller.signal.aborted);
    } finally {
      setBusy(null);
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const question = q.value.trim();
    if (!question || busy) return;
    if (kind() === "search") search(question);
    else { q.value = ""; ask(question); }
  });
  q.addEventListener("keydown", (e) => {
    // Enter while an input method is composing picks a candidate (Chinese input).
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  for (const r of form.elements.kind) r.addEventListener("change", () => {
    modeLabel.hidden = kind() !== "search";
    applyLang();
  });
  stopBtn.addEventListener("click", () => busy && busy.abort());
  $("reset").addEventListener("click", () => {
    history = [];
    sources = [];
    turns.textContent = "";
    results.textContent = "";
    $("passage").hidden = true;
    say(t("resetDone"));
    q.focus();
  });
  $("passage-close").addEventListener("click", closePassage);
  $("passage").addEventListener("keydown", (e) => { if (e.key === "Escape") closePassage(); });
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("ragmap.lang", lang);
    applyLang();
  });
  keyInput.value = sessionStorage.getItem("ragmap.key") || "";
  keyInput.addEventListener("change", () => {
    const k = keyInput.value.trim();
    if (k) sessionStorage.setItem("ragmap.key", k); else sessionStorage.removeItem("ragmap.key");
  });

  modeLabel.hidden = true;
  applyLang();
  fetch("health").then((r) => r.ok ? r.json() : null).then((h) => {
    if (h && typeof h.documents === "number") { lastHealth = h; applyLang(); }
  }).catch(() => {});
  q.focus();
})();
