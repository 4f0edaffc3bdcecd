// The review page. Record text is only ever set with textContent: nothing a model wrote can
// become markup here. Every decision gets an id before it is sent and waits in localStorage
// until the server confirms it, so a decision made while the server was down is sent again
// (once: the server ignores an id it already has).
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF = meta("csrf-token");
const STAGE = meta("stage");
const $ = (id) => document.getElementById(id);
const PENDING = `distill-review-pending:${STAGE}`;

let summary = null;   // the stage's records, as /api/records lists them
let record = null;    // the record on screen
let ranking = [];     // candidates ranked so far with shift+digit, best first
let editing = null;   // null, "answer" or a candidate index
let latest = 0;       // the newest refresh: an older one that answers late is not shown

function reviewer() {
  return $("reviewer").value.trim() || meta("reviewer");
}

function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function status(text, ok) {
  const el = $("status");
  el.textContent = text;
  el.className = ok ? "ok" : "error";
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

function pending() {
  return JSON.parse(localStorage.getItem(PENDING) || "[]");
}

function setPending(list) {
  localStorage.setItem(PENDING, JSON.stringify(list));
}

async function post(decision) {
  const response = await fetch("/api/decisions", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(decision),
  });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.rejected = response.status >= 400 && response.status < 500;
    throw error;
  }
  return body;
}

async function flush() {
  // Oldest first, so the last word on a record stays the last.
  for (const decision of pending()) {
    try {
      await post(decision);
    } catch (error) {
      if (!error.rejected) {
        status(`not saved yet (server unreachable); ${pending().length} waiting`, false);
        return false;
      }
      status(`refused: ${error.message}`, false);
    }
    setPending(pending().filter((d) => d.id !== decision.id));
  }
  return true;
}

async function decide(action, extra = {}) {
  if (!record) return;
  const decision = { id: newId(), record: record.id, reviewer: reviewer(), action, ...extra };
  setPending([...pending(), decision]);
  if (await flush()) {
    status(`saved: ${action}`, true);
    const shown = await refresh();
    if (shown && shown === decision.record && (action === "accept" || action === "reject")) move(1);
  }
}

function visible() {
  if (!summary) return [];
  const kind = $("filter").value;
  const threshold = parseFloat($("margin").value);
  return summary.records.filter((r) => {
    if (kind === "unreviewed") return !r.mine;
    if (kind === "margin") return r.margin !== null && r.margin < threshold;
    if (kind === "dropped") return r.dropped;
    if (kind === "rejected") return r.rejected_by_someone;
    if (kind === "flagged") return r.flagged;
    return true;
  });
}

function move(step) {
  const list = visible();
  if (!list.length) return show(null);
  const at = list.findIndex((r) => record && r.id === record.id);
  const next = at < 0 ? 0 : Math.min(Math.max(at + step, 0), list.length - 1);
  location.hash = list[next].id;
}

function nextUnreviewed() {
  const list = summary ? summary.records : [];
  const start = record ? list.findIndex((r) => r.id === record.id) : -1;
  const rest = [...list.slice(start + 1), ...list.slice(0, start + 1)];
  const next = rest.find((r) => !r.mine);
  if (next) location.hash = next.id;
  else status("every record has your decision", true);
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fill(id, items) {
  const box = $(id);
  box.replaceChildren(...items);
}

function show(data) {
  record = data;
  ranking = [];
  closeEditor();
  $("empty").hidden = !!data;
  $("record").classList.toggle("none", !data);
  if (!data) return;
  const list = visible();
  const at = list.findIndex((r) => r.id === data.id);
  $("position").textContent = `${at + 1} of ${list.length} shown (${summary.total} in the stage)`;
  $("dropped").hidden = !data.dropped;
  $("dropped").textContent = data.dropped ? `dropped by the pipeline: ${data.dropped}` : "";
  fill("prompt", data.prompt.map((m) => {
    const box = el("div", null, "message");
    box.append(el("span", m.role, "role"), el("span", m.content));
    return box;
  }));
  $("answer-box").hidden = data.answer === null;
  $("answer").textContent = data.mine.edits.answer ?? data.answer ?? "";
  const best = data.mine.ranking ? data.mine.ranking[0] : null;
  $("candidates-title").hidden = !data.candidates.length;
  fill("candidates", data.candidates.map((c) => {
    const card = el("div", null, "candidate" + (c.index === best ? " best" : ""));
    card.dataset.index = c.index;
    const writer = c.writer ? `${c.writer.model} (${c.writer.license})` : "unknown writer";
    const score = c.score === null ? "no score" : `score ${c.score}`;
    card.append(el("div", `#${c.index + 1} · ${score} · ${writer}`, "meta"));
    const place = data.mine.ranking ? data.mine.ranking.indexOf(c.index) : -1;
    if (place >= 0) card.append(el("div", place === 0 ? "your best" : `your rank ${place + 1}`, "rank"));
    card.append(el("div", data.mine.edits[String(c.index)] ?? c.content, "content"));
    const choose = el("button", `best (${c.index + 1})`);
    choose.className = "choose";
    choose.addEventListener("click", () => decide("choose", { candidate: c.index }));
    const rank = el("button", "rank next");
    rank.className = "rank-next";
    rank.addEventListener("click", () => rankNext(c.index));
    const edit = el("button", "edit");
    edit.addEventListener("click", () => openEditor(c.index));
    card.append(choose, rank, edit);
    return card;
  }));
  const mine = data.mine;
  const parts = [];
  if (mine.verdict) parts.push(mine.verdict + (mine.reason ? ` (${mine.reason})` : ""));
  if (mine.ranking) parts.push(`ranking ${mine.ranking.map((k) => `#${k + 1}`).join(" > ")}`);
  if (Object.keys(mine.edits).length) parts.push(`edited ${Object.keys(mine.edits).join(", ")}`);
  if (mine.flagged) parts.push(`flagged${mine.flag_reason ? ` (${mine.flag_reason})` : ""}`);
  $("mine").textContent = parts.length ? `you: ${parts.join("; ")}` : "you: no decision yet";
  fill("others", Object.entries(data.others).map(([who, s]) =>
    el("div", `${who}: ${s.verdict || "-"}${s.reason ? ` (${s.reason})` : ""}` +
      `${s.ranking ? `; best #${s.ranking[0] + 1}` : ""}${s.flagged ? "; flagged" : ""}`)));
  $("record-id").textContent = data.id;
  const lic = data.license;
  $("license").textContent = `${lic.expression} (${lic.use})` +
    (lic.restrictions.length ? `; restrictions: ${lic.restrictions.join(", ")}` : "");
  fill("sources", data.sources.map((s) => el("div", `${s.dataset}${s.row !== null ? ` row ${s.row}` : ""} (${s.license})`)));
  fill("generators", data.generators.map((g) => el("div", `${g.role}: ${g.model} via ${g.plugin} (${g.license})`)));
  fill("events", data.events.map((e) => el("div", `${e.stage}: ${e.action}${e.plugin ? ` by ${e.plugin}` : ""}${e.reason ? `: ${e.reason}` : ""}`)));
}

function rankNext(index) {
  if (!record || ranking.includes(index)) return;
  ranking.push(index);
  status(`ranking ${ranking.map((k) => `#${k + 1}`).join(" > ")}`, true);
  if (ranking.length === record.candidates.length) {
    const order = ranking;
    ranking = [];
    decide("rank", { ranking: order });
  }
}

function openEditor(target) {
  if (!record) return;
  editing = target;
  const current = target === "answer"
    ? (record.mine.edits.answer ?? record.answer ?? "")
    : (record.mine.edits[String(target)] ?? record.candidates[target].content);
  $("editor").hidden = false;
  $("editor-title").textContent = target === "answer" ? "Edit the answer" : `Edit candidate #${target + 1}`;
  $("editor-text").value = current;
  $("editor-text").focus();
}

function closeEditor() {
  editing = null;
  $("editor").hidden = true;
}

async function saveEdit() {
  if (editing === null) return;
  const extra = { text: $("editor-text").value };
  if (editing !== "answer") extra.candidate = editing;
  closeEditor();
  await decide("edit", extra);
}

function reject() {
  const reason = $("reason").value.trim();
  if (!reason) {
    status("type a reason, then press Enter to reject", false);
    $("reason").focus();
    $("reason").dataset.then = "reject";
    return;
  }
  $("reason").value = "";
  decide("reject", { reason });
}

function flag() {
  if (!record) return;
  if (record.mine.flagged) return decide("unflag");
  const reason = $("reason").value.trim() || null;
  $("reason").value = "";
  decide("flag", { reason });
}

async function refresh(id) {
  const mine = ++latest;
  const listed = await getJSON(`/api/records?reviewer=${encodeURIComponent(reviewer())}`);
  if (mine !== latest) return null;
  summary = listed;
  $("progress").textContent = `${summary.reviewed} of ${summary.total} reviewed by ${summary.reviewer}`;
  const a = summary.agreement;
  $("agreement").textContent = a.verdict_pairs
    ? `agreement ${Math.round(a.verdict_agreement * 100)}% on ${a.verdict_pairs} shared verdicts` +
      (a.verdict_kappa !== null ? ` (kappa ${a.verdict_kappa})` : "")
    : "";
  const target = id || location.hash.slice(1);
  if (!target) {
    nextUnreviewedOrFirst();
    return null;
  }
  try {
    const data = await getJSON(`/api/records/${encodeURIComponent(target)}?reviewer=${encodeURIComponent(reviewer())}`);
    if (mine !== latest) return null;
    show(data);
    return data.id;
  } catch (error) {
    status(`cannot show ${target}: ${error.message}`, false);
    return null;
  }
}

function nextUnreviewedOrFirst() {
  const first = summary.records.find((r) => !r.mine) || summary.records[0];
  if (first) location.hash = first.id;
  else show(null);
}

function onKey(event) {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
  if (editing !== null) {
    if (event.key === "Escape") closeEditor();
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) saveEdit();
    return;
  }
  if (typing) {
    if (event.key === "Enter" && document.activeElement.id === "reason" && $("reason").dataset.then === "reject") {
      delete $("reason").dataset.then;
      $("reason").blur();
      reject();
    }
    if (event.key === "Escape") document.activeElement.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const digit = /^Digit([1-9])$/.exec(event.code);
  if (digit && record) {
    const index = Number(digit[1]) - 1;
    if (index < record.candidates.length) {
      event.preventDefault();
      if (event.shiftKey) rankNext(index);
      else decide("choose", { candidate: index });
    }
    return;
  }
  const actions = {
    a: () => decide("accept"),
    r: reject,
    f: flag,
    c: () => decide("clear"),
    e: () => openEditor(record && record.candidates.length
      ? (record.mine.ranking ? record.mine.ranking[0] : 0) : "answer"),
    j: () => move(1),
    ArrowRight: () => move(1),
    k: () => move(-1),
    ArrowLeft: () => move(-1),
    n: nextUnreviewed,
  };
  const act = actions[event.key];
  if (act) {
    event.preventDefault();
    act();
  }
}

function start() {
  $("reviewer").value = localStorage.getItem("distill-review-reviewer") || meta("reviewer");
  $("reviewer").addEventListener("change", () => {
    localStorage.setItem("distill-review-reviewer", reviewer());
    refresh();
  });
  $("filter").addEventListener("change", () => move(0));
  $("margin").addEventListener("change", () => move(0));
  $("prev").addEventListener("click", () => move(-1));
  $("next").addEventListener("click", () => move(1));
  $("next-unreviewed").addEventListener("click", nextUnreviewed);
  $("accept").addEventListener("click", () => decide("accept"));
  $("reject").addEventListener("click", reject);
  $("flag").addEventListener("click", flag);
  $("clear").addEventListener("click", () => decide("clear"));
  $("edit-answer").addEventListener("click", () => openEditor("answer"));
  $("editor-save").addEventListener("click", saveEdit);
  $("editor-cancel").addEventListener("click", closeEditor);
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => refresh(location.hash.slice(1)));
  flush().then(() => refresh());
}

document.addEventListener("DOMContentLoaded", start);
