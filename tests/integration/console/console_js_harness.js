// Runs static/console.js against a minimal fake DOM (no browser): the parent page of job "P" with children c1, c2.
// Prints what the script did as JSON, for test_console_js.py.
"use strict";
const fs = require("fs");
const vm = require("vm");

const log = { reloads: 0, fetches: [], writesBeforeFlush: 0, timers: 0 };
function element(attrs, text) {
  return {
    attrs: Object.assign({}, attrs),
    textContent: text || "",
    getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; },
    setAttribute(name, value) { this.attrs[name] = String(value); },
    parentNode: null,
  };
}
const parentStatus = element({ "data-status": "pending" }, "pending");
const cells = { c1: element({ "data-child": "c1", "data-status": "pending" }, "pending"),
                c2: element({ "data-child": "c2", "data-status": "pending" }, "pending") };
const rows = { c1: element({ "data-status": "pending" }, "pending"), c2: element({ "data-status": "pending" }, "pending") };
const cancel = element({}, "Cancel");
const cancelHolder = { removed: [], removeChild(child) { this.removed.push(child); } };
cancel.parentNode = cancelHolder;
const body = element({ "data-page": "parent", "data-job-id": "P" });

const document = {
  body,
  getElementById(id) { return { "parent-status": parentStatus, cancel: cancelHolder.removed.length ? null : cancel }[id] || null; },
  querySelectorAll(selector) { return selector === "td[data-child]" ? Object.values(cells) : []; },
  querySelector(selector) {
    const row = /^tr\[data-child-row="([^"]+)"\] td\.status$/.exec(selector);
    return row ? rows[row[1]] || null : null;
  },
};
let timers = [];
let frames = [];
const sources = [];
class EventSource {
  constructor(url) { this.url = url; this.listeners = {}; sources.push(this); }
  addEventListener(kind, listener) { (this.listeners[kind] = this.listeners[kind] || []).push(listener); }
  emit(kind, data) { (this.listeners[kind] || []).forEach((l) => l({ data: JSON.stringify(data) })); }
}
const window = {
  setTimeout(fn) { timers.push(fn); log.timers += 1; return log.timers; },
  requestAnimationFrame(fn) { frames.push(fn); },
  location: { reload() { log.reloads += 1; } },
};
function fetch(url) {
  log.fetches.push(url);
  return Promise.resolve({ ok: true, json: () => Promise.resolve({ job: { id: "P", status: "JOB_STATUS_RUNNING" },
    children: [{ id: "c2", parentId: "P", status: "JOB_STATUS_FAILED" }] }) });
}
function flush() {
  const due = timers; timers = [];
  due.forEach((fn) => fn());
  const drawn = frames; frames = [];
  drawn.forEach((fn) => fn());
}
function snapshot() {
  return { parent: [parentStatus.attrs["data-status"], parentStatus.textContent],
           c1: [cells.c1.attrs["data-status"], cells.c1.textContent], c2: [cells.c2.attrs["data-status"], cells.c2.textContent],
           row1: rows.c1.attrs["data-status"], cancelRemoved: cancelHolder.removed.length };
}

vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"),
  { window, document, EventSource, fetch, Map, JSON, String, Array, encodeURIComponent });

(async () => {
  const out = { sources: sources.map((s) => s.url) };
  const es = sources[0];
  es.emit("job", { id: "c1", parentId: "P", status: "JOB_STATUS_RUNNING" });
  es.emit("job", { id: "c1", parentId: "P", status: "JOB_STATUS_COMPLETED" });
  es.emit("job", { id: "x1", parentId: "OTHER", status: "JOB_STATUS_FAILED" });
  es.emit("job", { id: "P", status: "JOB_STATUS_RUNNING", progress: { total: 2, succeeded: 1 } });
  out.beforeFlush = snapshot();
  out.timersForFirstBatch = timers.length;
  flush();
  out.afterFlush = snapshot();
  es.emit("job", { id: "P", status: "JOB_STATUS_COMPLETED" });
  flush();
  out.afterParentDone = snapshot();
  es.emit("job", { id: "c9", parentId: "P", status: "JOB_STATUS_PENDING" });
  flush();
  out.reloadsAfterUnknownChild = log.reloads;
  es.emit("reset", {});
  await new Promise((resolve) => setImmediate(resolve));
  flush();
  out.fetches = log.fetches;
  out.afterReset = snapshot();
  process.stdout.write(JSON.stringify(out));
})();
