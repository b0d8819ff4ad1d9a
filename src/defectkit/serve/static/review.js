// The review page: plain JS against the service's own API, no build step, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { items: [], index: -1 };

function apiKey() { return localStorage.getItem("defectkit.apiKey") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey()) headers["X-API-Key"] = apiKey();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function badge(verdict, extra = "") {
  const span = document.createElement("span");
  span.className = `badge ${verdict} ${extra}`.trim();
  span.textContent = verdict;
  return span;
}

function card(item, index) {
  const div = document.createElement("div");
  div.className = "card";
  div.tabIndex = 0;
  div.dataset.id = item.id;
  const img = document.createElement("img");
  img.loading = "lazy";
  // A kept overlay, else the image itself: listing must not make the server render 100 overlays.
  // as_png: a TIFF, which browsers do not show, comes as a PNG copy (other formats as stored).
  img.src = item.overlay_stored ? item.overlay_url : `${item.image_url}?as_png=1`;
  img.alt = item.image;
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.append(badge(item.verdict));
  const score = document.createElement("span");
  score.textContent = `${item.score.toFixed(3)} / ${item.threshold.toFixed(3)}`;
  caption.append(score);
  if (item.review) caption.append(badge(`reviewed: ${item.review.verdict}`, "reviewed"));
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = item.image;
  caption.append(name);
  div.append(img, caption);
  div.addEventListener("click", () => openDetail(index));
  div.addEventListener("keydown", (event) => { if (event.key === "Enter") openDetail(index); });
  return div;
}

async function refresh() {
  const grid = $("grid");
  try {
    let items;
    if ($("view").value === "queue") {
      items = await (await api("/v1/reviews/queue?limit=100")).json();
      $("count").textContent = `${items.length} waiting for review`;
    } else {
      const query = new URLSearchParams({ limit: "100" });
      for (const key of ["verdict", "reviewed", "surface"]) {
        if ($(key).value) query.set(key, $(key).value);
      }
      const page = await (await api(`/v1/inspections?${query}`)).json();
      items = page.items;
      $("count").textContent = `${page.total} inspection${page.total === 1 ? "" : "s"}`;
    }
    state.items = items;
    grid.replaceChildren(...items.map(card));
    $("message").textContent = items.length ? "" : "Nothing here yet: inspect some images.";
  } catch (error) {
    $("message").textContent = `Could not load inspections (${error.message})`;
  }
}

function fact(list, term, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function showDetail() {
  const item = state.items[state.index];
  if (!item) return;
  $("detail-overlay").src = item.overlay_url;
  $("detail-title").textContent = item.image;
  const verdict = $("detail-verdict");
  verdict.className = `badge ${item.verdict}`;
  verdict.textContent = item.verdict;
  const review = $("detail-review");
  review.hidden = !item.review;
  if (item.review) review.textContent = `reviewed: ${item.review.verdict}${item.review.defect_class ? " / " + item.review.defect_class : ""}`;
  $("detail-score-fill").style.width = `${Math.min(100, item.score * 100)}%`;
  $("detail-threshold-mark").style.left = `calc(${Math.min(100, item.threshold * 100)}% - 1px)`;
  const relation = item.score >= item.threshold ? "≥" : "<";
  $("detail-score").textContent = `score ${item.score.toFixed(4)} ${relation} threshold ${item.threshold.toFixed(4)}`;
  const facts = $("detail-facts");
  facts.replaceChildren();
  fact(facts, "model", item.model);
  fact(facts, "defect class", item.defect_class);
  fact(facts, "surface", item.surface && `${item.surface}${item.surface_score != null ? ` (${item.surface_score.toFixed(3)})` : ""}`);
  fact(facts, "station", item.station);
  fact(facts, "inspected", new Date(item.created).toLocaleString());
  fact(facts, "latency", `${item.latency_ms.toFixed(1)} ms`);
  const regions = $("detail-regions");
  regions.replaceChildren(...item.regions.map((region) => {
    const li = document.createElement("li");
    li.textContent = `[${region.box.map((v) => Math.round(v)).join(", ")}] score ${region.score.toFixed(3)}, ${region.area_px} px${region.class ? ", " + region.class : ""}`;
    return li;
  }));
  if (!item.regions.length) regions.replaceChildren(Object.assign(document.createElement("li"), { textContent: "none" }));
  const attributes = item.attributes || [];
  $("detail-attributes").hidden = !attributes.length;
  $("detail-attribute-list").replaceChildren(...attributes.map((text) => Object.assign(document.createElement("li"), { textContent: String(text) })));
  const scores = Object.entries(item.class_scores || {}).sort((a, b) => b[1] - a[1]);
  $("detail-class-scores").hidden = !scores.length;
  $("detail-class-score-list").replaceChildren(...scores.map(([name, p]) => Object.assign(document.createElement("li"), { textContent: `${name}: ${p.toFixed(3)}` })));
  $("review-class").value = (item.review && item.review.defect_class) || item.defect_class || "";
  $("review-note").value = (item.review && item.review.note) || "";
  $("review-status").textContent = "";
}

function openDetail(index) {
  state.index = index;
  showDetail();
  if (!$("detail").open) $("detail").showModal();
}

async function submitReview(verdict) {
  const item = state.items[state.index];
  if (!item) return;
  if (!verdict && item.verdict === "unknown") {
    // An unknown is never quietly confirmed as ok: the operator must say which it is.
    $("review-status").textContent = "unknown: press o (ok) or d (defect)";
    return;
  }
  const chosen = verdict || item.verdict;
  const body = { verdict: chosen, defect_class: chosen === "defect" ? ($("review-class").value || null) : null, note: $("review-note").value || null };
  try {
    const response = await api(`/v1/inspections/${item.id}/review`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    state.items[state.index] = await response.json();
    showDetail();
    $("review-status").textContent = `saved: ${chosen}`;
    const cardNode = document.querySelector(`.card[data-id="${item.id}"]`);
    if (cardNode) cardNode.replaceWith(card(state.items[state.index], state.index));
  } catch (error) {
    $("review-status").textContent = `not saved (${error.message})`;
  }
}

async function upload(files) {
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    $("last").hidden = false;
    try {
      const item = await (await api("/v1/inspect?overlay=1", { method: "POST", body: form })).json();
      const verdict = $("last-verdict");
      verdict.className = `badge ${item.verdict}`;
      verdict.textContent = item.verdict;
      $("last-detail").textContent = `${item.image}: score ${item.score.toFixed(3)} (threshold ${item.threshold.toFixed(3)}), ${item.regions.length} region(s)`;
    } catch (error) {
      $("last-verdict").className = "badge unknown";
      $("last-verdict").textContent = "refused";
      $("last-detail").textContent = `${file.name}: ${error.message}`;
    }
  }
  await refresh();
}

async function exportReviews() {
  try {
    const blob = await (await api("/v1/reviews/export")).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "reviews.zip";
    document.body.append(link);
    link.click();
    link.remove();
    $("message").textContent = "Exported the reviewed images (reviews.zip): train on it with `defectkit train`.";
  } catch (error) {
    $("message").textContent = `Export failed (${error.message})`;
  }
}

async function showModel() {
  try {
    const [model] = await (await api("/v1/models")).json();
    // A line has no decision threshold of its own: each detector keeps one; it shows its surfaces.
    const judged = model.method === "line"
      ? `${model.surfaces.length} surfaces, unseen alert at ${model.thresholds.unknown.toFixed(3)}`
      : `threshold ${model.thresholds.decision.toFixed(3)}`;
    $("model-info").textContent = `${model.name} (${model.method}, ${model.backend}), ${judged}`;
  } catch (error) {
    $("model-info").textContent = `model unavailable (${error.message})`;
  }
}

document.addEventListener("keydown", (event) => {
  if (!$("detail").open || ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  const keys = { o: () => submitReview("ok"), d: () => submitReview("defect"), c: () => submitReview(null),
    ArrowRight: () => { if (state.index < state.items.length - 1) openDetail(state.index + 1); },
    ArrowLeft: () => { if (state.index > 0) openDetail(state.index - 1); } };
  if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
});

$("upload").addEventListener("change", (event) => upload(Array.from(event.target.files)));
$("export").addEventListener("click", exportReviews);
$("review-confirm").addEventListener("click", () => submitReview(null));
$("review-ok").addEventListener("click", () => submitReview("ok"));
$("review-defect").addEventListener("click", () => submitReview("defect"));
$("detail-close").addEventListener("click", () => $("detail").close());
$("detail").addEventListener("close", refresh);
for (const id of ["view", "verdict", "reviewed"]) $(id).addEventListener("change", refresh);
$("surface").addEventListener("change", refresh);
$("api-key").value = apiKey();
$("api-key").addEventListener("change", (event) => { localStorage.setItem("defectkit.apiKey", event.target.value); refresh(); });

showModel();
refresh();
