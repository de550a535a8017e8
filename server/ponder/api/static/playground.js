// Ponder playground: one prompt through one or two strategies, streamed from this server's
// own /v1/chat/completions. Everything a model or a server wrote is shown as text
// (textContent), never as HTML. The API key stays in this page's memory.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("#key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function errorText(body, status) {
  if (body && body.error && body.error.message) {
    const e = body.error;
    return e.param ? `${e.message} (${e.param})` : e.message;
  }
  return `HTTP ${status}`;
}

async function loadModels() {
  const r = await fetch("/v1/models", { headers: headers() });
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    showPageError(errorText(body, r.status));
    return;
  }
  showPageError("");
  const models = body.data.map((m) => m.id);
  const plain = models.filter((id) => !id.includes("+"));
  const strategies = ["none", ...new Set(models.filter((id) => id.includes("+")).map((id) => id.split("+")[1]))];
  fill($("#model"), plain);
  for (const sel of document.querySelectorAll(".strategy")) {
    fill(sel, strategies);
    sel.value = sel.closest("[data-side]").dataset.side === "a" ? "majority_vote" : "self_certainty";
  }
}

function fill(select, values) {
  const keep = select.value;
  select.replaceChildren(...values.map((v) => new Option(v, v)));
  if (values.includes(keep)) select.value = keep;
}

function showPageError(text) {
  const box = $(".result[data-side=a]");
  if (!text) return;
  box.replaceChildren($("#result-template").content.cloneNode(true));
  const err = $(".error", box);
  err.textContent = text;
  err.hidden = false;
  $(".status", box).hidden = true;
}

function request(side) {
  const fs = $(`.side[data-side=${side}]`);
  const strategy = $(".strategy", fs).value;
  const ponder = { strategy, include_candidates: true };
  const samples = parseInt($(".samples", fs).value, 10);
  if (!Number.isNaN(samples)) {
    if (strategy === "none") ponder.samples = 1;
    else ponder.samples = samples;
  }
  const raw = $(".options", fs).value.trim();
  if (raw) ponder[strategy] = JSON.parse(raw); // a bad JSON throws: shown as the error
  const body = {
    model: $("#model").value,
    messages: [{ role: "user", content: $("#prompt").value }],
    max_tokens: parseInt($("#max_tokens").value, 10),
    temperature: parseFloat($("#temperature").value),
    stream: true,
    ponder,
  };
  const seed = $("#seed").value.trim();
  if (seed) body.seed = parseInt(seed, 10);
  return body;
}

async function run(side) {
  const box = $(`.result[data-side=${side}]`);
  box.replaceChildren($("#result-template").content.cloneNode(true));
  const started = performance.now();
  const fail = (text) => {
    const err = $(".error", box);
    err.textContent = text;
    err.hidden = false;
    $(".status", box).hidden = true;
  };
  let body;
  try {
    body = request(side);
  } catch (e) {
    fail(`the options are not JSON: ${e.message}`);
    return;
  }
  const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!r.ok) {
    fail(errorText(await r.json().catch(() => null), r.status));
    return;
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) {
          fail(errorText(chunk, 500));
          return;
        }
        const progress = chunk.ponder && chunk.ponder.progress;
        if (progress) {
          const bar = $("progress", box);
          bar.max = progress.total;
          bar.value = progress.done;
          $(".progress-text", box).textContent = `${progress.done} / ${progress.total}`;
          box.dataset.firstProgressMs = box.dataset.firstProgressMs || String(Math.round(performance.now() - started));
        }
        for (const c of chunk.choices || []) {
          if (c.index === 0 && c.delta && c.delta.content) {
            text += c.delta.content;
            $(".text", box).textContent = text;
          }
        }
        if (chunk.ponder && chunk.ponder.candidates !== undefined) render(box, chunk.ponder);
        else if (chunk.ponder && chunk.ponder.strategy && !progress) render(box, chunk.ponder);
      }
    }
  }
  $(".status", box).hidden = true;
  box.dataset.done = "true";
}

function number(x, digits = 3) {
  return typeof x === "number" ? x.toFixed(digits) : x === null || x === undefined ? "—" : String(x);
}

function render(box, p) {
  $(".summary", box).hidden = false;
  $(".answer", box).textContent = p.answer === null || p.answer === undefined ? "(none)" : p.answer;
  $(".confidence", box).textContent = number(p.confidence);
  $(".strategy-name", box).textContent = p.strategy;
  $(".drawn", box).textContent = String(p.generated ?? p.samples ?? "");
  const cands = p.candidates || [];
  $(".tokens", box).textContent = String(cands.reduce((n, c) => n + (c.tokens || 0), 0));
  renderTally(box, p.tally || []);
  renderBranches(box, (p.notes && p.notes.steps) || []);
  renderTree(box, p.notes && p.notes.search && p.notes.search.tree);
  renderCandidates(box, cands, p.chosen);
}

function renderTally(box, tally) {
  const el = $(".tally", box);
  $(".tally-title", box).hidden = tally.length === 0;
  const top = Math.max(...tally.map((t) => t.share), 1e-9);
  el.replaceChildren(
    ...tally.map((t, i) => {
      const row = document.createElement("div");
      row.className = i === 0 ? "bar-row winner" : "bar-row";
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = t.answer;
      label.title = t.answer;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(2, (200 * t.share) / top)}px`;
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = `${t.votes} votes, share ${number(t.share, 2)}`;
      row.append(label, bar, value);
      return row;
    }),
  );
}

function renderBranches(box, steps) {
  $(".branches-title", box).hidden = steps.length === 0;
  $(".branches", box).replaceChildren(
    ...steps.map((s) => {
      const li = document.createElement("li");
      const ppl = s.perplexities.map((x) => number(x, 2)).join(", ");
      li.textContent = `token ${s.position}: entropy ${number(s.entropy, 2)}, ${s.trials} trials (perplexities ${ppl}), kept trial ${s.chosen}`;
      return li;
    }),
  );
}

function renderTree(box, tree) {
  const el = $(".tree", box);
  $(".tree-title", box).hidden = !tree;
  if (!tree) return el.replaceChildren();
  el.replaceChildren(
    ...tree.map((step) => {
      const div = document.createElement("div");
      div.className = "tree-step";
      div.textContent = `step ${step.step}: `;
      for (const n of step.nodes) {
        const span = document.createElement("span");
        span.className = "node" + (n.kept || n.copies ? " kept" : "") + (n.finish ? " finished" : "");
        const extra = n.weight !== undefined ? ` w ${number(n.weight, 2)} ×${n.copies ?? ""}` : "";
        span.textContent = `#${n.id}←${n.parent} ${number(n.score, 2)}${extra}`;
        span.title = n.text;
        div.append(span);
      }
      return div;
    }),
  );
}

const SCORE_COLUMNS = [
  ["self_certainty", "self-certainty"],
  ["borda_points", "Borda points"],
  ["path_probability", "RPC probability"],
  ["trace_confidence", "trace confidence"],
  ["verification", "verification"],
  ["score", "score"],
  ["weight", "weight"],
  ["copies", "copies"],
];

function renderCandidates(box, cands, chosen) {
  $(".candidates-title", box).hidden = cands.length === 0;
  const cols = SCORE_COLUMNS.filter(([k]) => cands.some((c) => c[k] !== undefined));
  const head = document.createElement("tr");
  for (const name of ["#", "answer", "voted", "tokens", ...cols.map(([, n]) => n), "text"]) {
    const th = document.createElement("th");
    th.textContent = name;
    head.append(th);
  }
  $("thead", box).replaceChildren(head);
  $("tbody", box).replaceChildren(
    ...cands.map((c) => {
      const tr = document.createElement("tr");
      if (c.index === chosen) tr.className = "chosen";
      const voted = c.answer !== null && c.answer !== undefined && !c.pruned;
      const cells = [c.index, c.answer ?? "—", voted ? "yes" : "no", c.tokens, ...cols.map(([k]) => number(c[k])), c.text];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        td.textContent = String(v);
        if (i === cells.length - 1) td.className = "cand-text";
        tr.append(td);
      });
      return tr;
    }),
  );
}

function setup() {
  $("#compare").addEventListener("change", (e) => {
    for (const el of document.querySelectorAll("[data-side=b]")) el.hidden = !e.target.checked;
  });
  $("#key").addEventListener("change", loadModels);
  $("#form").addEventListener("submit", (e) => {
    e.preventDefault();
    const sides = $("#compare").checked ? ["a", "b"] : ["a"];
    $(".result[data-side=b]").hidden = sides.length === 1;
    Promise.all(sides.map(run)).catch((err) => showPageError(String(err)));
  });
  loadModels();
}

document.addEventListener("DOMContentLoaded", setup);
