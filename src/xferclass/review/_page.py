"""The review's one page: HTML, style and script, no network but its own server."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>xferclass review</title>
<style>
body{margin:0;font-family:system-ui,sans-serif;line-height:1.4;color:#111;background:#fafafa}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;padding:.6rem 1rem;
background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0;z-index:1}
header h1{font-size:1.1rem;margin:0}
#progress{font-weight:bold}
nav button,.actions button,header button{font:inherit;padding:.35rem .7rem;border:1px solid #999;
border-radius:.3rem;background:#fff;cursor:pointer}
nav button[aria-selected=true]{background:#1a4d8f;color:#fff;border-color:#1a4d8f}
.actions button:hover,nav button:hover{border-color:#1a4d8f}
.actions button.chosen{background:#1b5e20;color:#fff;border-color:#1b5e20}
main{padding:1rem;max-width:80rem;margin:0 auto}
.filters{display:flex;flex-wrap:wrap;gap:1rem;margin:.5rem 0}
.card{background:#fff;border:1px solid #ddd;border-radius:.5rem;padding:1rem}
.images{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
figure{margin:0;max-width:100%}
figure img{display:block;width:min(28rem,90vw);height:auto;max-height:60vh;object-fit:contain;
background:#eee}
.images.many figure img{width:min(15rem,42vw);max-height:40vh}
figcaption{font-size:.85rem;overflow-wrap:anywhere;color:#333}
.facts{font-size:1.05rem;margin:.6rem 0}
.leak{color:#b00020;font-weight:bold}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:.8rem 0}
kbd{font:inherit;font-size:.8em;border:1px solid #bbb;border-bottom-width:2px;border-radius:.2rem;
padding:0 .25rem;background:#f4f4f4;color:#111}
#status{min-height:1.4rem;color:#1b5e20}
#status.bad{color:#b00020}
.help{color:#555;font-size:.85rem}
</style></head>
<body>
<header>
<h1>xferclass review</h1>
<span id="progress">loading…</span>
<button id="apply" type="button" title="write the corrected label table">
Apply: write the table</button>
<span id="status" role="status"></span>
</header>
<main>
<nav role="tablist">
<button type="button" role="tab" data-kind="label" aria-selected="true">
Label issues <span></span></button>
<button type="button" role="tab" data-kind="duplicate" aria-selected="false">
Duplicates <span></span></button>
<button type="button" role="tab" data-kind="outlier" aria-selected="false">
Outliers <span></span></button>
</nav>
<div class="filters">
<label>Class <select id="class"><option value="">all</option></select></label>
<label>Split <select id="split"><option value="">all</option><option>train</option>
<option>validation</option><option>test</option></select></label>
<label><input type="checkbox" id="undecided"> undecided only</label>
</div>
<section class="card" id="item" aria-live="polite"></section>
<p class="help">Keys: <kbd>←</kbd>/<kbd>→</kbd> previous and next; label issues
<kbd>a</kbd> accept the suggestion, <kbd>k</kbd> keep, <kbd>l</kbd> another label,
<kbd>x</kbd> exclude; duplicates <kbd>a</kbd> keep all, <kbd>1</kbd>…<kbd>9</kbd> keep only
that one, <kbd>x</kbd> exclude from training; outliers <kbd>k</kbd> keep, <kbd>x</kbd> exclude;
<kbd>u</kbd> undo the decision. Every decision is saved as it is made.</p>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
let state = null, kind = "label", index = 0;

function api(path, body) {
  const init = {headers: {"X-Token": token}};
  if (body !== undefined) {
    init.method = "POST"; init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return fetch(path, init).then(async (r) => {
    const data = await r.json().catch(() => ({error: r.statusText}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  });
}
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.onclick = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}
function say(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text; s.className = bad ? "bad" : "";
}
function visible() {
  const cls = document.getElementById("class").value;
  const split = document.getElementById("split").value;
  const undecided = document.getElementById("undecided").checked;
  return state.items.filter((it) => it.kind === kind
    && (!cls || it.labels.includes(cls) || it.suggested === cls)
    && (!split || it.splits.includes(split))
    && (!undecided || !state.decisions[it.id]));
}
function counts() {
  const p = state.progress;
  document.getElementById("progress").textContent = `${p.decided} of ${p.total} decided`;
  for (const tab of document.querySelectorAll("nav button")) {
    const all = state.items.filter((it) => it.kind === tab.dataset.kind);
    const done = all.filter((it) => state.decisions[it.id]).length;
    tab.querySelector("span").textContent = `(${done}/${all.length})`;
    tab.setAttribute("aria-selected", String(tab.dataset.kind === kind));
  }
}
function imageURL(path) {
  return `image?path=${encodeURIComponent(path)}&token=${encodeURIComponent(token)}`;
}
function describe(decision) {
  if (!decision) return "undecided";
  if (decision.action === "relabel") return `relabel as ${decision.label}`;
  if (decision.action === "keep_one") return `keep only ${decision.keep}`;
  return decision.action.replace("_", " ");
}
function button(text, key, action, extra, chosen) {
  const b = el("button", {type: "button", "data-action": action}, text + " ", el("kbd", {}, key));
  if (chosen) b.classList.add("chosen");
  b.onclick = () => decide(action, extra);
  return b;
}
function render() {
  counts();
  const box = document.getElementById("item");
  box.replaceChildren();
  const items = visible();
  if (!items.length) { box.append(el("p", {}, "Nothing to review here.")); return; }
  index = Math.max(0, Math.min(index, items.length - 1));
  const it = items[index], decision = state.decisions[it.id];
  const act = decision ? decision.action : null;
  box.dataset.item = it.id;
  box.append(el("p", {}, `${index + 1} of ${items.length} · `,
    el("b", {id: "decision"}, describe(decision))));
  const images = el("div", {class: "images" + (it.paths.length > 2 ? " many" : "")});
  it.paths.forEach((path, j) => images.append(el("figure", {},
    el("img", {src: imageURL(path), alt: path}),
    el("figcaption", {}, `${it.paths.length > 1 ? (j + 1) + ". " : ""}${path} · ${it.splits[j]}`
      + ` · ${it.labels[j]}`))));
  box.append(images);
  const actions = el("div", {class: "actions"});
  if (it.kind === "label") {
    box.append(el("p", {class: "facts"}, "Given ", el("b", {}, it.labels[0]), ", suggested ",
      el("b", {}, it.suggested), ` (score ${it.score.toFixed(3)})`));
    actions.append(button(`Accept: ${it.suggested}`, "a", "accept", {}, act === "accept"),
      button("Keep", "k", "keep", {}, act === "keep"));
    const pick = el("select", {id: "other", "aria-label": "another label"},
      el("option", {value: ""}, "another label…"));
    for (const name of state.class_names) pick.append(el("option", {value: name}, name));
    if (act === "relabel") pick.value = decision.label;
    pick.onchange = () => { if (pick.value) decide("relabel", {label: pick.value}); };
    actions.append(pick, button("Exclude", "x", "exclude", {}, act === "exclude"));
  } else if (it.kind === "duplicate") {
    if (it.cross_split) box.append(el("p", {class: "leak"}, "Leak across splits"));
    actions.append(button("Keep all", "a", "keep_all", {}, act === "keep_all"));
    it.paths.forEach((path, j) => actions.append(button(`Keep only ${j + 1}`, String(j + 1),
      "keep_one", {keep: path}, act === "keep_one" && decision.keep === path)));
    actions.append(button("Exclude from training", "x", "exclude", {}, act === "exclude"));
  } else {
    box.append(el("p", {class: "facts"}, `Outlier score ${it.score.toFixed(3)}`));
    actions.append(button("Keep", "k", "keep", {}, act === "keep"),
      button("Exclude", "x", "exclude", {}, act === "exclude"));
  }
  if (decision) actions.append(button("Undo", "u", "undo", {}, false));
  box.append(actions);
}
async function decide(action, extra) {
  const items = visible();
  if (!items.length) return;
  const it = items[index];
  try {
    const answer = await api("api/decide", {item: it.id, action, ...extra});
    if (action === "undo") delete state.decisions[it.id];
    else state.decisions[it.id] = answer.decision;
    state.progress = answer.progress;
    say(`saved: ${describe(action === "undo" ? null : answer.decision)}`);
    const undecidedOnly = document.getElementById("undecided").checked;
    if (action !== "undo" && !undecidedOnly) index += 1;
    render();
  } catch (failure) { say(failure.message, true); }
}
function move(step) { index += step; render(); }
document.addEventListener("keydown", (event) => {
  if (!state || event.ctrlKey || event.metaKey || event.altKey) return;
  if (["SELECT", "INPUT", "TEXTAREA"].includes(event.target.tagName)) return;
  const it = visible()[index], key = event.key.toLowerCase();
  if (key === "arrowright" || key === "j") return move(1);
  if (key === "arrowleft" || key === "h") return move(-1);
  if (!it) return;
  if (key === "u") return decide("undo", {});
  if (key === "x") return decide("exclude", {});
  if (it.kind === "label") {
    if (key === "a") return decide("accept", {});
    if (key === "k") return decide("keep", {});
    if (key === "l") { event.preventDefault(); return document.getElementById("other").focus(); }
  } else if (it.kind === "duplicate") {
    if (key === "a") return decide("keep_all", {});
    const n = parseInt(key, 10);
    if (n >= 1 && n <= it.paths.length) return decide("keep_one", {keep: it.paths[n - 1]});
  } else if (key === "k") return decide("keep", {});
});
for (const tab of document.querySelectorAll("nav button")) {
  tab.onclick = () => { kind = tab.dataset.kind; index = 0; render(); };
}
for (const id of ["class", "split", "undecided"]) {
  document.getElementById(id).onchange = () => { index = 0; render(); };
}
document.getElementById("apply").onclick = async () => {
  try {
    const r = await api("api/apply", {});
    say(`table written: ${r.table} (${r.relabelled} relabelled, ${r.excluded} excluded)`);
  } catch (failure) { say(failure.message, true); }
};
api("api/state").then((data) => {
  state = data;
  const pick = document.getElementById("class");
  for (const name of state.class_names) pick.append(el("option", {value: name}, name));
  document.title = `xferclass review: ${state.data}`;
  render();
}).catch((failure) => say(failure.message, true));
</script>
</body></html>
"""
