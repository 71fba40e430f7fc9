// curator view: a small single-page app over the JSON API of `curator view OUT`.
// Every string that came from a teacher or a dataset reaches the page through text nodes
// (el() / textContent), never as HTML: a trace holding markup shows that markup as text.
"use strict";

const $app = document.getElementById("app");
let META = null;

// ---------------------------------------------------------------------------------- helpers

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "href") e.setAttribute("href", safeHref(v));
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

// Links only ever point inside the app.
function safeHref(v) {
  const s = String(v);
  return s.startsWith("#/") ? s : "#/";
}

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function sampleHref(key) { return "#/sample/" + encodeURIComponent(key); }
function promptHref(id) { return "#/prompt/" + encodeURIComponent(id); }
function clusterHref(rep) { return "#/cluster/" + encodeURIComponent(rep); }

const fmtInt = (x) => (x === null || x === undefined ? "–" : Math.round(Number(x)).toLocaleString("en-US"));
const fmtNum = (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: d }));
const fmtPct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
function fmtUsd(x) {
  if (x === null || x === undefined) return "unknown";
  const a = Math.abs(x);
  if (a !== 0 && a < 0.01) return "$" + x.toPrecision(2);
  return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: a < 10 ? 4 : 2 });
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");

async function api(path, params, method) {
  const qs = params ? "?" + new URLSearchParams(params).toString() : "";
  const r = await fetch("/api/" + path + qs, { method: method || "GET", headers: { "Accept": "application/json" } });
  let body;
  try { body = await r.json(); } catch (e) { body = { error: "the server sent no JSON (" + r.status + ")" }; }
  if (!r.ok && !body.error) body.error = "HTTP " + r.status;
  return body;
}

function status(s) {
  if (s === true) return el("span", { class: "badge ok" }, "accepted");
  if (s === false) return el("span", { class: "badge bad" }, "rejected");
  return el("span", { class: "badge pending" }, "pending");
}

function errorBox(msg) { return el("div", { class: "error", role: "alert" }, msg); }

function parseHash() {
  const h = location.hash.replace(/^#/, "") || "/samples";
  const [path, query] = h.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: Object.fromEntries(new URLSearchParams(query || "")) };
}

// Text with \boxed{...} and the given spans (foreign-language sentences) marked: built from
// text nodes and <mark> elements whose content is set as text.
function richText(text, opts) {
  text = text === null || text === undefined ? "" : String(text);
  const ranges = [];
  let i = 0;
  while ((i = text.indexOf("\\boxed{", i)) !== -1) {
    let depth = 0, j = i + 6;
    for (; j < text.length; j++) {
      if (text[j] === "{") depth++;
      else if (text[j] === "}") { depth--; if (depth === 0) break; }
    }
    ranges.push([i, Math.min(j + 1, text.length), "boxed", "\\boxed{} answer"]);
    i = j + 1;
  }
  for (const span of (opts && opts.foreign) || []) {
    if (!span || !span.text) continue;
    let k = 0;
    while ((k = text.indexOf(span.text, k)) !== -1) {
      ranges.push([k, k + span.text.length, "foreign", "foreign language: " + (span.lang || "?")]);
      k += span.text.length;
    }
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const [s, e, cls, title] of ranges) {
    if (s < pos) continue; // overlapping marks: the first wins
    if (s > pos) frag.appendChild(document.createTextNode(text.slice(pos, s)));
    frag.appendChild(el("mark", { class: cls, title }, text.slice(s, e)));
    pos = e;
  }
  if (pos < text.length) frag.appendChild(document.createTextNode(text.slice(pos)));
  return frag;
}

// The trace as the student will be trained on it (the export's default `think` layout).
function studentView(cot, completion, foreign) {
  const pre = el("pre", { class: "trace" });
  pre.appendChild(el("span", { class: "tag" }, "<think>\n"));
  const think = el("span", { class: "think" });
  think.appendChild(richText(cot, { foreign: foreign.filter((f) => f.field !== "completion") }));
  pre.appendChild(think);
  pre.appendChild(el("span", { class: "tag" }, "\n</think>\n\n"));
  const ans = el("span", { class: "answer" });
  ans.appendChild(richText(completion, { foreign: foreign.filter((f) => f.field !== "cot") }));
  pre.appendChild(ans);
  return pre;
}

function foreignSpans(verdicts) {
  const out = [];
  for (const v of verdicts || []) {
    const d = v.details;
    if (v.filter !== "language" || !d || typeof d !== "object") continue;
    for (const ex of d.examples || []) if (ex && typeof ex.text === "string") out.push({ text: ex.text, lang: ex.lang, field: d.field });
  }
  return out;
}

// ---------------------------------------------------------------------------------- chrome

function setStatus() {
  const s = document.getElementById("status");
  const n = document.getElementById("notice");
  clear(s);
  if (!META) return;
  if (META.ready) {
    s.appendChild(document.createTextNode("data as of " + fmtTime(META.as_of) + (META.refreshing ? " (refreshing…)" : "") +
      " · " + fmtInt(META.sampled) + " samples · " + (META.name || "") + " "));
    s.appendChild(el("span", { class: "muted", title: META.out_dir }, META.out_dir));
  } else {
    s.appendChild(document.createTextNode(META.error ? "could not read the data" : "reading the data…"));
  }
  const notes = [];
  if (META.journal_rows_not_in_shards)
    notes.push(fmtInt(META.journal_rows_not_in_shards) + " answers are still in the journal (a run is going on, or was killed): " +
      "they show once compacted into a shard. Refresh to read again.");
  if (META.error) notes.push(META.error);
  n.hidden = notes.length === 0;
  clear(n).appendChild(document.createTextNode(notes.join(" ")));
}

async function loadMeta() {
  META = await api("meta");
  setStatus();
  return META;
}

async function waitReady() {
  for (;;) {
    await loadMeta();
    if (META.ready && !META.refreshing) return;
    if (!META.ready && META.error && !META.refreshing) return;
    clear($app).appendChild(el("p", { class: "muted" }, "Reading " + (META.out_dir || "the output directory") + "…"));
    await new Promise((r) => setTimeout(r, 300));
  }
}

document.getElementById("refresh").addEventListener("click", async () => {
  await api("refresh", null, "POST");
  await new Promise((r) => setTimeout(r, 150));
  await waitReady();
  route();
});

// ---------------------------------------------------------------------------------- samples

const FILTERS = ["status", "reason", "step", "failed", "prompt_id", "source", "model", "length_col", "min_len", "max_len", "usage_estimated",
  "q", "fields", "sort", "desc", "offset", "limit"];

function select(name, value, options, label) {
  const s = el("select", { name, id: "f-" + name, "aria-label": label });
  for (const [v, text] of options) {
    const o = el("option", { value: v }, text);
    if (String(v) === String(value || "")) o.selected = true;
    s.appendChild(o);
  }
  return el("label", {}, label + " ", s);
}

function facetOptions(name) {
  return [["", "any"], ...((META.facets && META.facets[name]) || []).map((f) => [f.value, f.value + " (" + fmtInt(f.count) + ")"])];
}

function filterForm(p) {
  const form = el("form", { class: "filters", id: "filters" });
  const fields = (p.fields || "problem,cot,completion").split(",");
  form.append(
    el("label", {}, "Search ", el("input", { type: "search", name: "q", id: "f-q", value: p.q || "", placeholder: "text in problem / CoT / completion", size: 32 })),
    el("span", { class: "checks" }, ...["problem", "cot", "completion"].map((f) =>
      el("label", {}, el("input", { type: "checkbox", name: "field", value: f, checked: fields.includes(f) }), f))),
    select("status", p.status, [["", "any"], ["accepted", "accepted"], ["rejected", "rejected"], ["pending", "not judged yet"]], "Status"),
    select("reason", p.reason, facetOptions("reason"), "Reject reason"),
    select("step", p.step, facetOptions("step"), "Rejected first by"),
    select("failed", p.failed, facetOptions("failed"), "Failed step (any)"),
    el("label", {}, "Prompt id ", el("input", { name: "prompt_id", id: "f-prompt_id", value: p.prompt_id || "", size: 10 })),
    select("source", p.source, facetOptions("source"), "Source"),
    select("model", p.model, facetOptions("model"), "Model"),
    select("length_col", p.length_col || "cot_chars", (META.length_columns || []).map((c) => [c, c]), "Length"),
    el("input", { name: "min_len", id: "f-min_len", value: p.min_len || "", placeholder: "min", size: 6, "aria-label": "minimum length" }),
    el("input", { name: "max_len", id: "f-max_len", value: p.max_len || "", placeholder: "max", size: 6, "aria-label": "maximum length" }),
    select("usage_estimated", p.usage_estimated, [["", "any"], ["yes", "estimated"], ["no", "from the server"]], "Usage"),
    select("sort", p.sort || "seq", (META.sorts || ["seq"]).map((c) => [c, c === "seq" ? "storage order" : c]), "Sort"),
    el("label", {}, el("input", { type: "checkbox", name: "desc", id: "f-desc", checked: p.desc === "1" }), "descending"),
    el("button", { type: "submit", id: "apply" }, "Apply"),
    el("a", { href: "#/samples", class: "reset" }, "reset"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const q = {};
    for (const k of ["q", "status", "reason", "step", "failed", "prompt_id", "source", "model", "length_col", "min_len", "max_len", "usage_estimated", "sort"]) {
      const v = (fd.get(k) || "").toString().trim();
      if (v && !(k === "sort" && v === "seq") && !(k === "length_col" && v === "cot_chars")) q[k] = v;
    }
    const fs = fd.getAll("field");
    if (fs.length && fs.length < 3) q.fields = fs.join(",");
    if (fd.get("desc")) q.desc = "1";
    location.hash = "#/samples?" + new URLSearchParams(q).toString();
  });
  return form;
}

async function pageSamples(p) {
  if (!META.sampled) return emptyRun();
  const view = el("section", {});
  view.append(filterForm(p));
  const out = el("div", { id: "results" }, el("p", { class: "muted" }, p.q ? "Searching the traces…" : "Loading…"));
  view.append(out);
  clear($app).appendChild(view);
  const params = {};
  for (const k of FILTERS) if (p[k] !== undefined && p[k] !== "") params[k] = p[k];
  const t0 = performance.now();
  const r = await api("samples", params);
  clear(out);
  if (r.error) { out.appendChild(errorBox(r.error)); return; }
  const off = r.offset, lim = r.limit;
  const info = el("p", { class: "count", id: "count" },
    r.rows.length ? `rows ${fmtInt(off + 1)}–${fmtInt(off + r.rows.length)} of ${r.total_exact ? "" : "at least "}${fmtInt(r.total)}` : "no sample matches",
    el("span", { class: "muted" }, ` · ${Math.round(performance.now() - t0)} ms` + (r.search ?
      ` · search results in storage order · read ${fmtInt(r.groups_read)} of ${fmtInt(r.groups_total)} row groups` +
      (r.groups_skipped ? ` (${fmtInt(r.groups_skipped)} ruled out by the word index or the filters)` : "") +
      (r.indexed && r.indexed.files_indexed < r.indexed.files ? ` · word index: ${r.indexed.files_indexed} of ${r.indexed.files} shards so far` : "") : "")),
    r.stopped ? el("span", { class: "error-inline" }, " · stopped after the time limit: narrow the search with filters or more words") : "");
  out.append(info);
  const table = el("table", { class: "samples", id: "samples-table" });
  const cols = ["sample", "prompt", "status", "reject reason", "CoT chars", "answer chars", "out tokens", "cost", "latency s", "tries", "finish", "problem"];
  table.appendChild(el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))));
  const tb = el("tbody", {});
  for (const row of r.rows) {
    tb.appendChild(el("tr", {},
      el("td", { class: "mono" }, el("a", { href: sampleHref(row.key), class: "sample-link" }, row.key.slice(0, 10))),
      el("td", {}, row.prompt_id === null ? "–" : el("a", { href: promptHref(row.prompt_id) }, row.prompt_id), " #" + row.sample_index),
      el("td", {}, status(row.accepted)),
      el("td", { class: "reason" }, row.reject_reason || ""),
      el("td", { class: "num" }, fmtInt(row.cot_chars)),
      el("td", { class: "num" }, fmtInt(row.completion_chars)),
      el("td", { class: "num" }, fmtInt(row.completion_tokens), row.usage_estimated ? el("span", { class: "est", title: "estimated locally: the teacher sent no usage" }, "*") : ""),
      el("td", { class: "num" }, fmtUsd(row.cost_usd)),
      el("td", { class: "num" }, fmtNum(row.latency_s, 2)),
      el("td", { class: "num" }, row.attempts === null ? "–" : row.attempts),
      el("td", {}, row.finish_reason || ""),
      el("td", { class: "problem" }, row.problem_head || ""),
    ));
  }
  table.appendChild(tb);
  out.append(table);
  const nav = el("p", { class: "pager" });
  const go = (o) => { const q = { ...p, offset: String(o) }; if (!o) delete q.offset; location.hash = "#/samples?" + new URLSearchParams(q).toString(); };
  if (off > 0) nav.append(el("button", { type: "button", id: "prev", onclick: () => go(Math.max(0, off - lim)) }, "← previous"));
  if (off + r.rows.length < r.total) nav.append(el("button", { type: "button", id: "next", onclick: () => go(off + lim) }, "next →"));
  out.append(nav);
}

function emptyRun() {
  clear($app).appendChild(el("section", { class: "empty", id: "empty" },
    el("h2", {}, "No samples stored yet"),
    el("p", {}, "The output directory " + (META.out_dir || "") + " holds no compacted samples" +
      (META.journal_rows_not_in_shards ? ` (${fmtInt(META.journal_rows_not_in_shards)} answers are in the journal of a run going on)` : "") +
      ". Press Refresh once a run has stored some.")));
}

// ---------------------------------------------------------------------------------- one sample

function detailsList(v) {
  const d = v.details;
  if (d === null || d === undefined) return "";
  if (typeof d !== "object") return el("code", {}, String(d));
  const dl = el("dl", { class: "details" });
  for (const [k, val] of Object.entries(d)) {
    let shown;
    if ((k === "duplicate_of" || k === "keep") && typeof val === "string") {
      shown = el("a", { href: sampleHref(val), class: "dup-link", id: "dup-link" }, val.slice(0, 16) + "…");
    } else if (k === "examples" && Array.isArray(val)) {
      shown = el("ul", {}, val.map((x) => el("li", {}, el("mark", { class: "foreign" }, x && x.text !== undefined ? String(x.text) : JSON.stringify(x)),
        x && x.lang ? " (" + x.lang + (x.confidence !== undefined ? ", " + x.confidence : "") + ")" : "")));
    } else if (k === "extracted" || k === "pred_parsed") {
      shown = el("mark", { class: "extracted" }, typeof val === "string" ? val : JSON.stringify(val));
    } else {
      shown = typeof val === "string" ? val : JSON.stringify(val);
    }
    dl.append(el("dt", {}, k), el("dd", {}, shown));
  }
  return dl;
}

async function pageSample(key) {
  clear($app).appendChild(el("p", { class: "muted" }, "Loading…"));
  const s = await api("sample", { key });
  clear($app);
  if (s.error) { $app.appendChild(errorBox(s.error)); return; }
  const foreign = foreignSpans(s.verdicts);
  const head = el("section", { class: "sample-head" },
    el("h2", {}, "Sample ", el("span", { class: "mono", id: "sample-key" }, s.key)),
    el("p", {}, status(s.accepted), " ", el("span", { class: "reason", id: "sample-reason" }, s.reject_reason || ""),
      " · prompt ", s.prompt_id === null ? "–" : el("a", { href: promptHref(s.prompt_id), id: "prompt-link" }, s.prompt_id), " #" + s.sample_index,
      s.duplicate_of ? el("span", {}, " · near-duplicate of ", el("a", { href: sampleHref(s.duplicate_of), class: "dup-link" }, s.duplicate_of.slice(0, 16) + "…"),
        " (", el("a", { href: clusterHref(s.duplicate_of) }, "cluster"), ")") : "",
      s.duplicates ? el("span", {}, " · kept representative of ", el("a", { href: clusterHref(s.key) }, s.duplicates + " near-duplicates")) : ""),
  );
  const facts = el("table", { class: "facts" });
  const fact = (k, v) => facts.appendChild(el("tr", {}, el("th", {}, k), el("td", {}, v)));
  fact("model", s.model || "–");
  fact("source", s.source || "–");
  fact("finish_reason", s.finish_reason || "–");
  fact("CoT source", s.cot_source || "–");
  fact("tokens", `prompt ${fmtInt(s.prompt_tokens)} (cached ${fmtInt(s.cached_tokens)}) · completion ${fmtInt(s.completion_tokens)} (reasoning ${fmtInt(s.reasoning_tokens)})` +
    (s.usage_estimated ? " · estimated locally (the teacher sent no usage)" : ""));
  fact("cost", fmtUsd(s.cost_usd));
  fact("latency", fmtNum(s.latency_s, 3) + " s");
  fact("attempts", s.attempts === null ? "–" : String(s.attempts));
  fact("stored", fmtTime(s.created_at) + " · seq " + s.seq);
  fact("request id", s.request_id || "–");
  const ver = el("table", { class: "verdicts", id: "verdicts" },
    el("thead", {}, el("tr", {}, ["step", "filter", "verdict", "reason", "details"].map((c) => el("th", {}, c)))));
  const vb = el("tbody", {});
  for (const v of s.verdicts) {
    vb.appendChild(el("tr", { class: v.passed ? "" : "failed" }, el("td", {}, String(v.step)), el("td", {}, v.filter),
      el("td", {}, v.passed ? el("span", { class: "badge ok" }, "pass") : el("span", { class: "badge bad" }, "reject")),
      el("td", {}, v.reason || ""), el("td", {}, detailsList(v))));
  }
  if (!s.verdicts.length) vb.appendChild(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no verdicts yet (no chain has judged this sample)")));
  ver.appendChild(vb);
  const sibs = el("p", { class: "siblings" }, "All samples of this prompt: ",
    s.siblings.map((x) => el("a", { href: sampleHref(x.key), class: x.key === s.key ? "current " + (x.accepted ? "ok" : "bad") : (x.accepted ? "ok" : "bad") },
      "#" + x.sample_index)));
  $app.append(head,
    el("div", { class: "cols" },
      el("div", { class: "col-main" },
        el("h3", {}, "Problem"), el("pre", { class: "problem", id: "problem" }, s.problem || ""),
        el("h3", {}, "Gold"), el("pre", { class: "gold", id: "gold" }, s.gold === null ? "(none)" : s.gold),
        el("h3", {}, "As the student will see it ", el("span", { class: "muted legend" }, "think block · ", el("mark", { class: "boxed" }, "\\boxed{}"),
          foreign.length ? [" · ", el("mark", { class: "foreign" }, "foreign-language span")] : "")),
        el("div", { id: "trace" }, studentView(s.cot, s.completion, foreign)),
        s.raw_content !== null && s.raw_content !== s.completion ? el("details", {}, el("summary", {}, "message.content as the server sent it"), el("pre", { class: "raw" }, s.raw_content)) : "",
        el("details", {}, el("summary", {}, "request messages and parameters"), el("pre", { class: "raw" }, s.messages_json || ""), el("pre", { class: "raw" }, s.params_json || "")),
      ),
      el("div", { class: "col-side" }, el("h3", {}, "Verdicts"), ver, el("h3", {}, "Facts"), facts, sibs)));
}

// ---------------------------------------------------------------------------------- one prompt

async function pagePrompt(id) {
  clear($app).appendChild(el("p", { class: "muted" }, "Loading…"));
  const s = await api("prompt", { id });
  clear($app);
  if (s.error) { $app.appendChild(errorBox(s.error)); return; }
  $app.append(
    el("h2", {}, "Prompt ", el("span", { class: "mono", id: "prompt-id" }, s.prompt_id)),
    el("p", { id: "pass-rate" }, `pass rate ${fmtPct(s.pass_rate)} (${fmtInt(s.accepted)} of ${fmtInt(s.n)} samples accepted)` +
      (s.shown < s.n ? ` · first ${s.shown} shown` : "")),
    el("h3", {}, "Problem"), el("pre", { class: "problem" }, s.problem || ""),
    el("h3", {}, "Gold"), el("pre", { class: "gold" }, s.gold === null ? "(none)" : s.gold));
  const grid = el("div", { class: "side-by-side", id: "prompt-samples" });
  for (const x of s.samples) {
    grid.appendChild(el("div", { class: "card" },
      el("p", {}, el("a", { href: sampleHref(x.key) }, "#" + x.sample_index), " ", status(x.accepted), " ", el("span", { class: "reason" }, x.reject_reason || "")),
      el("p", { class: "muted" }, `${fmtInt(x.completion_tokens)} tokens · ${fmtUsd(x.cost_usd)} · ${fmtNum(x.latency_s, 2)} s · ${x.finish_reason || ""}`),
      el("p", { class: "steps" }, x.verdicts.map((v) => el("span", { class: "step " + (v.passed ? "ok" : "bad"), title: v.reason || "pass" }, v.filter))),
      studentView(x.cot, x.completion, [])));
  }
  $app.append(grid);
}

// ---------------------------------------------------------------------------------- clusters

async function pageClusters(p) {
  const off = Number(p.offset || 0);
  clear($app).appendChild(el("p", { class: "muted" }, "Loading…"));
  const r = await api("clusters", { offset: off, limit: 50 });
  clear($app);
  if (r.error) { $app.appendChild(errorBox(r.error)); return; }
  $app.append(el("h2", {}, "Near-duplicate clusters"),
    el("p", {}, r.total ? `${fmtInt(r.total)} clusters (a kept representative and the samples the near_dup step rejected as its copies)` :
      "No near-duplicates: the chain has no near_dup step, or it found none."));
  if (!r.rows.length) return;
  const t = el("table", { class: "samples", id: "clusters-table" }, el("thead", {}, el("tr", {}, ["representative", "size", "prompt", "problem"].map((c) => el("th", {}, c)))));
  const tb = el("tbody", {});
  for (const c of r.rows)
    tb.appendChild(el("tr", {}, el("td", { class: "mono" }, el("a", { href: clusterHref(c.rep), class: "cluster-link" }, c.rep.slice(0, 12))),
      el("td", { class: "num" }, fmtInt(c.size)), el("td", {}, c.prompt_id === null ? "–" : el("a", { href: promptHref(c.prompt_id) }, c.prompt_id)),
      el("td", { class: "problem" }, c.problem_head || "")));
  t.appendChild(tb);
  $app.append(t);
  const nav = el("p", { class: "pager" });
  if (off > 0) nav.append(el("a", { href: "#/clusters?offset=" + Math.max(0, off - 50) }, "← previous"));
  if (off + r.rows.length < r.total) nav.append(" ", el("a", { href: "#/clusters?offset=" + (off + 50) }, "next →"));
  $app.append(nav);
}

function diffView(diff) {
  const pre = el("pre", { class: "trace diff" });
  for (const [op, text] of diff) pre.appendChild(el(op === "=" ? "span" : op === "+" ? "ins" : "del", {}, text));
  return pre;
}

async function pageCluster(rep) {
  clear($app).appendChild(el("p", { class: "muted" }, "Loading…"));
  const s = await api("cluster", { rep });
  clear($app);
  if (s.error) { $app.appendChild(errorBox(s.error)); return; }
  $app.append(el("h2", {}, "Cluster of ", el("span", { class: "mono" }, rep.slice(0, 16) + "…")),
    el("p", {}, `${fmtInt(s.size)} samples` + (s.shown < s.size ? `, first ${s.shown} shown` : "") + " · ",
      el("ins", {}, "words only in the copy"), " ", el("del", {}, "words only in the representative")));
  const grid = el("div", { class: "side-by-side", id: "cluster-samples" });
  for (const x of s.samples) {
    const isRep = x.key === rep;
    grid.appendChild(el("div", { class: "card" + (isRep ? " rep" : "") },
      el("p", {}, isRep ? el("strong", {}, "kept: ") : "copy: ", el("a", { href: sampleHref(x.key) }, x.key.slice(0, 12)), " ", status(x.accepted),
        " ", el("span", { class: "reason" }, x.reject_reason || ""), " · prompt ", x.prompt_id === null ? "–" : el("a", { href: promptHref(x.prompt_id) }, x.prompt_id)),
      isRep ? el("pre", { class: "trace" }, x.cot) : diffView(x.diff || [])));
  }
  $app.append(grid);
}

// ---------------------------------------------------------------------------------- charts

function barChart(items, opts) {
  // items: [{label, value, sub?}] drawn as horizontal bars with the value written beside each.
  const w = opts.width || 640, rowH = 22, left = opts.left || 190, h = items.length * rowH + 8;
  const max = Math.max(1, ...items.map((i) => i.value || 0));
  const g = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img" });
  items.forEach((it, k) => {
    const y = 4 + k * rowH, bw = ((w - left - 200) * (it.value || 0)) / max;
    g.appendChild(svg("text", { x: left - 6, y: y + 15, "text-anchor": "end", class: "lbl" }, it.label));
    g.appendChild(svg("rect", { x: left, y: y + 3, width: Math.max(0, bw), height: rowH - 6, class: it.cls || "bar" }));
    g.appendChild(svg("text", { x: left + bw + 4, y: y + 15, class: "val" }, it.text !== undefined ? it.text : fmtInt(it.value)));
  });
  return g;
}

function histogram(hist, unit) {
  const w = 300, h = 120, pad = 18;
  const g = svg("svg", { width: w, height: h + pad, viewBox: `0 0 ${w} ${h + pad}`, class: "chart" });
  if (!hist) { g.appendChild(svg("text", { x: 4, y: 20, class: "lbl" }, "no data")); return g; }
  const n = hist.all.length, max = Math.max(1, ...hist.all), bw = w / n;
  for (let i = 0; i < n; i++) {
    const ha = (h * hist.all[i]) / max, hc = (h * (hist.accepted ? hist.accepted[i] : 0)) / max;
    g.appendChild(svg("rect", { x: i * bw, y: h - ha, width: bw - 1, height: ha, class: "bar all" },
      svg("title", {}, `${hist.edges[i]}–${hist.edges[i + 1]} ${unit}: ${hist.all[i]} samples, ${hist.accepted ? hist.accepted[i] : 0} accepted`)));
    g.appendChild(svg("rect", { x: i * bw, y: h - hc, width: bw - 1, height: hc, class: "bar acc" }));
  }
  g.appendChild(svg("text", { x: 0, y: h + 14, class: "lbl" }, "0"));
  g.appendChild(svg("text", { x: w, y: h + 14, "text-anchor": "end", class: "lbl" }, fmtInt(hist.edges[n]) + " " + unit));
  return g;
}

function lineChart(series, threshold, unit) {
  const w = 420, h = 120, pad = 18;
  const g = svg("svg", { width: w, height: h + pad, viewBox: `0 0 ${w} ${h + pad}`, class: "chart" });
  const xs = series.seq || [], ys = series.value || [];
  const pts = xs.map((x, i) => [x, ys[i]]).filter((p) => p[1] !== null && p[1] !== undefined);
  if (pts.length < 2) { g.appendChild(svg("text", { x: 4, y: 20, class: "lbl" }, "not enough samples for a series")); return g; }
  const x0 = pts[0][0], x1 = pts[pts.length - 1][0];
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (threshold !== null && threshold !== undefined) { y0 = Math.min(y0, threshold); y1 = Math.max(y1, threshold); }
  if (y1 === y0) { y1 += 1; y0 = Math.max(0, y0 - 1); }
  const X = (x) => ((x - x0) / Math.max(1, x1 - x0)) * (w - 4) + 2, Y = (y) => h - 4 - ((y - y0) / (y1 - y0)) * (h - 8);
  g.appendChild(svg("polyline", { points: pts.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" "), class: "line" }));
  if (threshold !== null && threshold !== undefined)
    g.appendChild(svg("line", { x1: 0, x2: w, y1: Y(threshold), y2: Y(threshold), class: "threshold" }, svg("title", {}, "threshold " + threshold)));
  g.appendChild(svg("text", { x: 0, y: h + 14, class: "lbl" }, "seq " + x0));
  g.appendChild(svg("text", { x: w, y: h + 14, "text-anchor": "end", class: "lbl" }, "seq " + x1 + " · " + unit + " " + fmtNum(y0, 2) + "–" + fmtNum(y1, 2)));
  return g;
}

async function pageCharts() {
  clear($app).appendChild(el("p", { class: "muted", id: "report-wait" }, "Computing the report (curator report --json)…"));
  let r;
  for (;;) {
    r = await api("report");
    if (r.state === "ready" || r.state === "failed") break;
    if (parseHash().parts[0] !== "charts") return;
    await new Promise((res) => setTimeout(res, 500));
  }
  clear($app);
  if (r.state === "failed") { $app.appendChild(errorBox("curator report failed: " + r.error)); return; }
  const R = r.report;
  $app.append(el("h2", {}, "Charts ", el("span", { class: "muted" }, "(the numbers of curator report --json, computed " + fmtTime(r.as_of) + ")")));
  const head = el("div", { class: "kpis", id: "kpis" });
  const kpi = (label, value) => head.appendChild(el("div", { class: "kpi" }, el("div", { class: "v" }, value), el("div", { class: "l" }, label)));
  kpi("sampled", fmtInt(R.sampled));
  kpi("accepted", fmtInt(R.accepted));
  kpi("acceptance", fmtPct(R.acceptance_rate));
  kpi("total cost", fmtUsd(R.total_usd));
  kpi("per accepted", fmtUsd(R.usd_per_accepted));
  kpi("per " + (R.per / 1000) + "k accepted", fmtUsd(R.usd_per_50k_accepted));
  $app.append(head);

  $app.append(el("h3", {}, "Funnel"));
  $app.append(el("div", { id: "funnel" }, barChart(R.funnel.map((s) => ({
    label: s.step === null ? s.stage : s.step + ". " + s.stage, value: s.remaining,
    text: fmtInt(s.remaining) + " (" + fmtPct(s.share_of_sampled) + ")" + (s.rejected ? " −" + fmtInt(s.rejected) : ""),
    cls: s.stage === "accepted" ? "bar acc" : "bar" })), { width: 720 })));
  if (R.reject_reasons.length) {
    $app.append(el("h3", {}, "Reject reasons (first failing step)"));
    $app.append(barChart(R.reject_reasons.map((x) => ({ label: x.reason, value: x.count, cls: "bar rej" })), { width: 720, left: 230 }));
  }

  $app.append(el("h3", {}, "Tokens and dollars"));
  const tk = R.tokens, perk = "per_" + R.per / 1000 + "k_accepted";
  const tt = el("table", { class: "facts num-table", id: "tokens" }, el("tr", {}, ["", "total", "per sample", "per accepted", "per " + R.per / 1000 + "k accepted"].map((c) => el("th", {}, c))));
  for (const k of ["prompt", "cached_prompt", "completion", "reasoning", "total"])
    tt.appendChild(el("tr", {}, el("th", {}, k.replace("_", " ") + " tokens"), el("td", {}, fmtInt(tk[k])), el("td", {}, fmtNum(tk.per_sample[k])),
      el("td", {}, fmtNum(tk.per_accepted[k])), el("td", {}, fmtInt(tk[perk][k]))));
  tt.appendChild(el("tr", {}, el("th", {}, "dollars"), el("td", {}, fmtUsd(R.total_usd)), el("td", {}, fmtUsd(R.usd_per_sample)),
    el("td", {}, fmtUsd(R.usd_per_accepted)), el("td", {}, fmtUsd(R.usd_per_50k_accepted))));
  $app.append(tt);
  $app.append(barChart([
    { label: "spent on accepted", value: R.cost.usd_on_accepted || 0, text: fmtUsd(R.cost.usd_on_accepted), cls: "bar acc" },
    { label: "spent on rejected", value: R.cost.usd_on_rejected || 0, text: fmtUsd(R.cost.usd_on_rejected), cls: "bar rej" }], { width: 720 }));

  $app.append(el("h3", {}, "Length distributions ", el("span", { class: "muted legend" }, "grey: all samples, green: accepted")));
  const lens = el("div", { class: "grid", id: "lengths" });
  for (const [name, L] of Object.entries(R.lengths))
    lens.appendChild(el("div", { class: "card" }, el("p", {}, name + " · median " + fmtNum(L.all.p50) + " · p95 " + fmtNum(L.all.p95)), histogram(L.hist, L.unit)));
  $app.append(lens);

  $app.append(el("h3", {}, "Drift over the run (rolling window)"));
  const dr = el("div", { class: "grid", id: "drift" });
  for (const s of R.drift)
    dr.appendChild(el("div", { class: "card" + (s.fired ? " fired" : "") },
      el("p", {}, s.label + " · ", s.fired ? el("span", { class: "badge bad" }, "fired") : el("span", { class: "badge ok" }, "ok"),
        " · first " + fmtNum(s.baseline, 3) + " → last " + fmtNum(s.last, 3)),
      s.note ? el("p", { class: "muted" }, s.note) : lineChart(s.series || {}, s.threshold, s.unit || ""),
      (s.messages || []).map((m) => el("p", { class: "muted" }, m))));
  $app.append(dr);

  if (R.finish_reasons.length) {
    $app.append(el("h3", {}, "Finish reasons"));
    $app.append(barChart(R.finish_reasons.map((x) => ({ label: String(x.finish_reason), value: x.count })), { width: 720 }));
  }
}

// ---------------------------------------------------------------------------------- router

async function route() {
  const { parts, params } = parseHash();
  for (const n of ["samples", "clusters", "charts"]) document.getElementById("nav-" + n).classList.toggle("active", parts[0] === n || (n === "clusters" && parts[0] === "cluster"));
  if (!META || (!META.ready && !META.error)) await waitReady();
  if (!META.ready) { clear($app).appendChild(errorBox(META.error || "the data could not be read")); return; }
  try {
    if (parts[0] === "sample" && parts[1]) await pageSample(parts[1]);
    else if (parts[0] === "prompt" && parts[1] !== undefined) await pagePrompt(parts[1]);
    else if (parts[0] === "clusters") await pageClusters(params);
    else if (parts[0] === "cluster" && parts[1]) await pageCluster(parts[1]);
    else if (parts[0] === "charts") await pageCharts();
    else await pageSamples(params);
    window.scrollTo(0, 0);
  } catch (e) {
    clear($app).appendChild(errorBox("could not load the page: " + e));
  }
  document.body.dataset.ready = "1";
}

window.addEventListener("hashchange", () => { document.body.dataset.ready = ""; route(); });
waitReady().then(route);
