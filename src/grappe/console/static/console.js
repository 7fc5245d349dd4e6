// Grappe console: live parts of server-rendered pages. No framework; each part
// starts only if its element is on the page, and every page works without it.
"use strict";

// Parts of a page that refresh themselves: <tbody data-refresh="/url" data-every="ms">.
// A refreshed part that holds [data-final] (a finished task) is not asked again.
function refreshEvery(el, ms) {
  const timer = setInterval(async () => {
    if (document.hidden) return;
    try {
      const resp = await fetch(el.dataset.refresh, { credentials: "same-origin" });
      if (resp.ok && !resp.redirected) el.innerHTML = await resp.text();
      if (el.querySelector("[data-final]")) clearInterval(timer);
    } catch (e) { /* the factory is restarting: try again next time */ }
  }, ms);
}

// A job's output and status, followed with Server-Sent Events until it ends.
function followJob(logs) {
  const start = new URL(logs.dataset.events, location.href);
  let offset = Number(start.searchParams.get("offset") || 0);
  let attempt = Number(start.searchParams.get("attempt") || 0);
  let first = offset === 0;  // the page shows a placeholder until the first output
  function open() {
    const url = new URL(start);
    url.searchParams.set("offset", offset);
    url.searchParams.set("attempt", attempt);
    const source = new EventSource(url);
    const notice = document.getElementById("stream-problem");
    source.addEventListener("log", (ev) => {
      const data = JSON.parse(ev.data);
      notice.hidden = true;
      if (first) { logs.textContent = ""; first = false; }
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent += data.text;
      if (data.offset !== undefined) offset = data.offset;
      if (data.attempt !== undefined) attempt = data.attempt;
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    });
    source.addEventListener("problem", (ev) => {
      // The job's site is not answering: say so, and keep following.
      notice.textContent = JSON.parse(ev.data).message;
      notice.hidden = false;
    });
    source.addEventListener("status", (ev) => {
      notice.hidden = true;
      const data = JSON.parse(ev.data);
      const panel = document.getElementById("job-status");
      if (panel) panel.innerHTML = data.html;
    });
    source.addEventListener("end", () => {
      source.close();
      logs.dataset.ended = "true";
      document.querySelectorAll("#cancel-form, h2 .live").forEach((el) => el.remove());
    });
    source.onerror = () => {
      // The stream closes at its time limit or when the factory restarts: pick up again.
      source.close();
      if (logs.dataset.ended !== "true") setTimeout(open, 2000);
    };
  }
  open();
}

// The YAML editor: line numbers, and the spec checked as it is typed.
function lineNumbers(gutter, text, bad) {
  const lines = Math.max(text.split("\n").length, 12);
  gutter.textContent = "";
  for (let n = 1; n <= lines; n++) {
    const span = document.createElement("span");
    span.textContent = n;
    if (bad.has(n)) span.className = "bad";
    gutter.appendChild(span);
    gutter.appendChild(document.createTextNode("\n"));
  }
}

function showProblems(box, problems) {
  box.textContent = "";
  const wrap = document.createElement("div");
  if (!problems.length) {
    wrap.className = "ok";
    wrap.textContent = box.dataset.ok;
    box.appendChild(wrap);
    return;
  }
  wrap.className = "problems";
  wrap.setAttribute("role", "alert");
  const head = document.createElement("p");
  head.textContent = box.dataset.invalid;
  const list = document.createElement("ul");
  for (const p of problems) {
    const item = document.createElement("li");
    if (p.line) {
      const link = document.createElement("a");
      link.href = "#";
      link.className = "goto-line";
      link.dataset.line = p.line;
      link.textContent = box.dataset.line.replace("{line}", p.line);
      item.append(link, " · ");
    }
    const code = document.createElement("code");
    code.textContent = p.field || "(document)";
    item.append(code, ": " + p.message);
    list.appendChild(item);
  }
  wrap.append(head, list);
  box.appendChild(wrap);
}

function goToLine(textarea, line) {
  const lines = textarea.value.split("\n");
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
  textarea.focus();
  textarea.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

function checkAsTyped(editor) {
  const textarea = editor.querySelector("textarea");
  const gutter = editor.querySelector(".gutter");
  const box = document.getElementById("spec-problems");
  const form = editor.closest("form");
  let timer = null;
  textarea.addEventListener("scroll", () => { gutter.scrollTop = textarea.scrollTop; });
  textarea.addEventListener("input", () => {
    lineNumbers(gutter, textarea.value, new Set());
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const body = new FormData();
      body.set("csrf", form.elements.csrf.value);
      body.set("spec", textarea.value);
      const resp = await fetch(editor.dataset.check, { method: "POST", body, credentials: "same-origin" });
      if (!resp.ok) return;
      const result = await resp.json();
      showProblems(box, result.problems);
      lineNumbers(gutter, textarea.value, new Set(result.problems.map((p) => p.line).filter(Boolean)));
    }, 400);
  });
}

document.addEventListener("click", (ev) => {
  const link = ev.target.closest(".goto-line");
  const textarea = document.getElementById("spec") || document.getElementById("program");
  if (!link || !textarea) return;
  ev.preventDefault();
  goToLine(textarea, Number(link.dataset.line));
});

// The chat playground: the conversation goes to /v1 with the member's project key and the
// answer is read from the server-sent events as they come, as any OpenAI client would.
function chatPlayground(form) {
  const log = document.getElementById("chat-log");
  const problem = document.getElementById("chat-problem");
  const message = document.getElementById("chat-message");
  let messages = [];
  function bubble(role, text) {
    const item = document.createElement("p");
    item.className = "chat-" + role;
    item.dataset.role = role;
    item.textContent = text;
    log.appendChild(item);
    return item;
  }
  document.getElementById("chat-clear").addEventListener("click", () => {
    messages = []; log.textContent = ""; problem.hidden = true;
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = message.value.trim();
    if (!text) return;
    problem.hidden = true;
    messages.push({ role: "user", content: text });
    bubble("user", text);
    message.value = "";
    const answer = bubble("assistant", "");
    answer.dataset.streaming = "true";
    const send = document.getElementById("chat-send");
    send.disabled = true;
    try {
      const resp = await fetch(form.dataset.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json",
                   "Authorization": "Bearer " + document.getElementById("chat-key").value.trim() },
        body: JSON.stringify({ model: document.getElementById("chat-model").value,
                               messages, stream: true, max_tokens: 64 }),
      });
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || resp.statusText);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut).trim();
          buffer = buffer.slice(cut + 2);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const event = JSON.parse(data);
          if (event.error) throw new Error(event.error.message);
          const delta = event.choices && event.choices[0] && event.choices[0].delta;
          if (delta && delta.content) answer.textContent += delta.content;
        }
      }
      messages.push({ role: "assistant", content: answer.textContent });
    } catch (e) {
      messages.pop();
      answer.remove();
      problem.textContent = e.message;
      problem.hidden = false;
    } finally {
      delete answer.dataset.streaming;
      send.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(
    (el) => refreshEvery(el, Number(el.dataset.every || 3000)));
  const logs = document.querySelector("#logs[data-events]");
  if (logs) followJob(logs);
  document.querySelectorAll(".editor[data-check]").forEach(checkAsTyped);
  const chat = document.getElementById("chat-form");
  if (chat) chatPlayground(chat);
});
