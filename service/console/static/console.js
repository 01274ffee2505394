// segflow operator console: one page over segflow's JSON API (no build step, no dependencies).
// The API key stays in sessionStorage (this tab only) and goes out as a bearer token, so the console
// shows exactly what that key may read. Views poll the API about once a second while they are open.
"use strict";

const KEY_STORAGE = "segflow.apiKey";
const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000;
const JOBS_PER_PAGE = 100;
const BATCHES_PER_PAGE = 20;
const MASK_TINT = [255, 0, 200];
const DEFAULT_OPACITY = 60;
const CANCELLABLE = new Set(["queued", "submitting", "unknown", "submitted"]);

// DOM helpers ---------------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

// An element with attributes and children; text is always set as text, never parsed as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const shortId = (id) => (id ? id.slice(0, 8) : "");
const usd = (n) => `$${(n || 0).toFixed(4)}`;
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const isWebUrl = (url) => /^https?:\/\//i.test(url || "");

function setNotice(text, isError = false) {
  const notice = $("#notice");
  notice.textContent = text || "";
  notice.hidden = !text;
  notice.classList.toggle("error", isError);
}

// the API -------------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `segflow answered HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

const apiKey = () => sessionStorage.getItem(KEY_STORAGE);

async function request(path, method = "GET") {
  let resp;
  try {
    resp = await fetch(path, { method, cache: "no-store", headers: { authorization: `Bearer ${apiKey()}` } });
  } catch (err) {
    throw new ApiFailure(0, { message: "segflow did not answer; retrying" });
  }
  if (resp.status === 401) {
    signOut("That API key was not accepted. Enter a valid key.");
    throw new ApiFailure(401, null);
  }
  if (!resp.ok) {
    let body = null;
    try {
      body = await resp.json();
    } catch (err) {
      body = null;
    }
    throw new ApiFailure(resp.status, body);
  }
  return resp;
}

const api = async (path, method) => (await request(path, method)).json();
const apiBlob = async (path) => (await request(path)).blob();

// Runs `refresh` now and then every second until the view is left; errors show in the notice.
async function live(isCurrent, refresh) {
  while (isCurrent()) {
    try {
      await refresh();
      if (!isCurrent()) return;
      setNotice("");
      $("#updated").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (!isCurrent() || err.status === 401) return;
      setNotice(err.message, true);
      if (err.status === 404) return; // nothing to follow: another tenant's or a wrong id
    }
    await sleep(document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
}

// Re-renders only when the data changed, so rows (and buttons under the pointer) stay put.
function unchanged(memo, data) {
  const text = JSON.stringify(data);
  if (memo.last === text) return true;
  memo.last = text;
  return false;
}

// shared pieces -------------------------------------------------------------------------------

function stateChip(state, count) {
  const label = count === undefined ? state : `${state} ${count}`;
  return h("span", { class: `chip state-${state}`, dataset: { state } }, label);
}

function stateChips(counts) {
  return h(
    "span",
    { class: "chips" },
    Object.entries(counts)
      .filter(([, n]) => n > 0)
      .map(([state, n]) => stateChip(state, n)),
  );
}

function progress(batch) {
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: batch.total || 1, value: batch.done }),
    h("span", { class: "progress-text" }, `${batch.done}/${batch.total} done`),
  );
}

function errorText(error) {
  return error ? `${error.code}: ${error.message}` : "";
}

// Retry and cancel: POST, then say what happened; `after` refreshes the view.
function jobActions(job, after) {
  const buttons = [];
  if (job.state === "failed") buttons.push(actionButton("Retry", `/v1/jobs/${job.job_id}/retry`, after));
  if (CANCELLABLE.has(job.state)) buttons.push(actionButton("Cancel", `/v1/jobs/${job.job_id}/cancel`, after));
  return h("span", { class: "actions" }, buttons);
}

function actionButton(label, path, after) {
  return h(
    "button",
    {
      type: "button",
      class: `action action-${label.toLowerCase()}`,
      onclick: async (event) => {
        event.currentTarget.disabled = true;
        try {
          const answer = await api(path, "POST");
          const what = answer.state ? `the job is now ${answer.state}` : `${answer.replayed} deliveries queued again`;
          setNotice(`${label}: ${what}.`);
        } catch (err) {
          if (err.status !== 401) setNotice(`${label} refused: ${err.message}`, true);
        }
        if (after) after();
      },
    },
    label,
  );
}

function table(id, headings, body) {
  return h(
    "table",
    { id, class: "grid" },
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    body,
  );
}

function pager(base, params, nextCursor) {
  const links = [];
  if (params.get("cursor")) {
    const first = new URLSearchParams(params);
    first.delete("cursor");
    links.push(h("a", { href: `${base}${first.size ? `?${first}` : ""}` }, "« first page"));
  }
  if (nextCursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", nextCursor);
    links.push(h("a", { href: `${base}?${next}` }, "next page »"));
  }
  return links;
}

// batches -------------------------------------------------------------------------------------

function batchesView(view, params) {
  const rows = h("tbody");
  const empty = h("p", { class: "muted", hidden: true }, "No batches yet for this key. Submit one with " +
    "`segflow submit` or POST /v1/batches; it appears here within a second.");
  const more = h("p", { class: "pager" });
  const budget = h("div", { class: "summary", id: "budget" });
  view.append(
    h("h1", {}, "Batches"),
    budget,
    empty,
    table("batches", ["Batch", "Created", "Progress", "Jobs per state", "Spend"], rows),
    more,
  );
  const cursor = params.get("cursor");
  const memo = {};
  return async () => {
    const query = `limit=${BATCHES_PER_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const [page, spend] = await Promise.all([api(`/v1/batches?${query}`), api("/v1/budget")]);
    if (unchanged(memo, { page, spend })) return;
    budget.replaceChildren(...budgetFacts(spend));
    empty.hidden = page.batches.length > 0;
    rows.replaceChildren(...page.batches.map(batchRow));
    more.replaceChildren(...pager("#/", params, page.next_cursor));
  };
}

// What the tenant spent against its caps, and whether the balance guard holds creates back.
function budgetFacts(spend) {
  const of = (cap) => (cap === null ? "no cap" : `of ${usd(cap)}`);
  return [
    spend.creates.paused
      ? h("span", { class: "error", id: "creates-paused", role: "alert" }, `Creates paused: ${spend.creates.reason}`)
      : h("span", { class: "muted" }, "creates running"),
    h("span", { class: "spend" }, `today ${usd(spend.spent.today_usd)} ${of(spend.effective.daily_usd)}`),
    h("span", { class: "spend" }, `this month ${usd(spend.spent.month_usd)} ${of(spend.effective.monthly_usd)}`),
  ];
}

function batchRow(batch) {
  return h(
    "tr",
    { dataset: { batchId: batch.batch_id, done: batch.done, total: batch.total } },
    h("td", {}, h("a", { href: `#/batches/${batch.batch_id}`, class: "mono", title: batch.batch_id }, shortId(batch.batch_id))),
    h("td", {}, when(batch.created_at)),
    h("td", {}, progress(batch)),
    h("td", {}, stateChips(batch.counts)),
    h("td", { class: "num" }, usd(batch.spend_usd)),
  );
}

// one batch and its jobs ----------------------------------------------------------------------

function batchView(view, batchId, params) {
  const base = `#/batches/${encodeURIComponent(batchId)}`;
  const state = params.get("state") || "";
  const cursor = params.get("cursor") || "";
  const summary = h("div", { class: "summary" });
  const filter = h("select", { id: "state-filter", "aria-label": "Show jobs in state" });
  filter.addEventListener("change", () => {
    location.hash = filter.value ? `${base}?state=${filter.value}` : base;
  });
  const rows = h("tbody");
  const more = h("p", { class: "pager" });
  const expanded = new Set();
  const memo = {};
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Batches"), " / batch"),
    h("h1", {}, "Batch ", h("span", { class: "mono" }, batchId)),
    summary,
    h("p", { class: "filter" }, h("label", { for: "state-filter" }, "Jobs in state "), filter),
    table("jobs", ["Job", "State", "Prompt", "Attempt", "Error", "Actions", ""], rows),
    more,
  );

  let refresh;
  const toggle = (jobId) => {
    if (expanded.has(jobId)) expanded.delete(jobId);
    else expanded.add(jobId);
    refresh();
  };

  refresh = async () => {
    let query = `limit=${JOBS_PER_PAGE}`;
    if (state) query += `&state=${encodeURIComponent(state)}`;
    if (cursor) query += `&cursor=${encodeURIComponent(cursor)}`;
    const [batch, page] = await Promise.all([api(`/v1/batches/${enc(batchId)}`), api(`/v1/batches/${enc(batchId)}/jobs?${query}`)]);
    const shown = page.jobs.filter((j) => expanded.has(j.job_id));
    const timelines = await Promise.all(shown.map((j) => api(`/v1/jobs/${j.job_id}/events`)));
    const byJob = Object.fromEntries(timelines.map((t) => [t.job_id, t.timeline]));
    if (unchanged(memo, { batch, page, byJob })) return;

    summary.replaceChildren(
      progress(batch),
      stateChips(batch.counts),
      h("span", { class: "spend" }, `spend ${usd(batch.spend_usd)}`),
      h("span", { class: "muted" }, `reserved ${usd(batch.reserved_usd)}`),
      batch.max_spend_usd === null
        ? null
        : h("span", { class: "muted", id: "batch-cap" }, `cap ${usd(batch.max_spend_usd)} (held jobs ${batch.on_budget})`),
      h("span", { class: "muted" }, `created ${when(batch.created_at)}`),
      batch.callback_url ? h("span", { class: "muted" }, `callbacks to ${batch.callback_url}`) : null,
    );
    filter.replaceChildren(
      h("option", { value: "" }, `every state (${batch.total})`),
      ...Object.entries(batch.counts).map(([s, n]) => h("option", { value: s, selected: s === state }, `${s} (${n})`)),
    );
    filter.value = state;
    rows.replaceChildren(
      ...page.jobs.flatMap((job) => {
        const row = jobRow(job, expanded.has(job.job_id), toggle, refresh);
        const timeline = byJob[job.job_id];
        return timeline ? [row, timelineRow(job.job_id, timeline)] : [row];
      }),
    );
    if (!page.jobs.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No jobs in this state.")));
    more.replaceChildren(...pager(base, params, page.next_cursor));
  };
  return refresh;
}

function jobRow(job, isExpanded, toggle, refresh) {
  return h(
    "tr",
    { dataset: { jobId: job.job_id, state: job.state } },
    h("td", {}, h("a", { href: `#/jobs/${job.job_id}`, class: "mono", title: job.job_id }, shortId(job.job_id))),
    h("td", {}, stateChip(job.state)),
    h("td", { class: "prompt" }, job.prompt),
    h("td", { class: "num" }, job.attempt),
    h("td", { class: "error" }, errorText(job.error)),
    h("td", {}, jobActions(job, refresh)),
    h(
      "td",
      {},
      h(
        "button",
        { type: "button", class: "link", "aria-expanded": String(isExpanded), onclick: () => toggle(job.job_id) },
        isExpanded ? "hide timeline" : "timeline",
      ),
    ),
  );
}

function timelineRow(jobId, timeline) {
  return h(
    "tr",
    { class: "timeline-row", dataset: { timelineOf: jobId } },
    h("td", { colspan: 7 }, timelineList(timeline)),
  );
}

function timelineList(timeline) {
  return h(
    "ol",
    { class: "timeline" },
    timeline.map((e) =>
      h(
        "li",
        { dataset: { event: e.event } },
        h("time", { datetime: e.at }, clock(e.at)),
        h("strong", {}, e.event),
        h("span", {}, e.from ? `${e.from} → ${e.to}` : `→ ${e.to}`),
        h("span", { class: "muted" }, `by ${e.source}`),
        e.detail ? h("code", {}, JSON.stringify(e.detail)) : null,
      ),
    ),
  );
}

// one job: facts, timeline, mask overlay ------------------------------------------------------

function jobView(view, jobId) {
  const crumbs = h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Batches"));
  const facts = h("dl", { class: "facts" });
  const error = h("p", { id: "job-error", class: "error-box", role: "alert", hidden: true });
  const actions = h("p", { class: "job-actions" });
  const overlay = h("section", { id: "mask" }, h("h2", {}, "Mask"));
  const overlayBody = h("div");
  overlay.append(overlayBody);
  const attempts = h("tbody");
  const timeline = h("div");
  view.append(
    crumbs,
    h("h1", {}, "Job ", h("span", { class: "mono" }, jobId)),
    error,
    actions,
    h("div", { class: "columns" }, h("div", {}, facts, h("h2", {}, "Timeline"), timeline), overlay),
    h("h2", {}, "Attempts"),
    table("attempts", ["Attempt", "Upstream task", "Origin", "Status", "Created"], attempts),
  );
  const memo = {};
  let maskShown = null;
  const refresh = async () => {
    const job = await api(`/v1/jobs/${enc(jobId)}`);
    if (unchanged(memo, job)) return;
    crumbs.replaceChildren(
      h("a", { href: "#/" }, "Batches"),
      " / ",
      h("a", { href: `#/batches/${job.batch_id}`, class: "mono" }, `batch ${shortId(job.batch_id)}`),
      " / job",
    );
    facts.replaceChildren(...jobFacts(job));
    error.hidden = !job.error;
    error.textContent = job.error ? `Error ${errorText(job.error)}` : "";
    actions.replaceChildren(jobActions(job, refresh));
    timeline.replaceChildren(timelineList(job.timeline));
    attempts.replaceChildren(
      ...job.attempts.map((a) =>
        h("tr", {}, h("td", { class: "num" }, a.attempt), h("td", { class: "mono" }, a.task_id), h("td", {}, a.origin),
          h("td", {}, a.status), h("td", {}, when(a.created_at))),
      ),
    );
    if (job.artifact && job.artifact.sha256 !== maskShown) {
      maskShown = job.artifact.sha256;
      await drawOverlay(overlayBody, job);
    } else if (!job.artifact) {
      maskShown = null;
      overlayBody.replaceChildren(h("p", { class: "muted" }, `No mask stored yet: the job is ${job.state}.`));
    }
  };
  return refresh;
}

function jobFacts(job) {
  const pairs = [
    ["State", stateChip(job.state)],
    ["Prompt", h("span", { class: "prompt" }, job.prompt)],
    ["Negative prompt", job.negative_prompt || "—"],
    ["Segment factor", job.segment_factor],
    ["Image", isWebUrl(job.image) ? h("a", { href: job.image, rel: "noreferrer noopener", target: "_blank" }, job.image) : job.image],
    ["Attempt", job.attempt],
    ["Price", job.price_usd === null ? "—" : usd(job.price_usd)],
    ["Mask", maskLink(job.artifact)],
    ["Created", when(job.created_at)],
    ["Finished", when(job.finished_at) || "—"],
  ];
  return pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
}

// The signed, expiring link: it needs no API key, so it can be handed to anyone who should have the mask.
function maskLink(artifact) {
  if (!artifact) return "—";
  if (!artifact.download_url) return artifact.pruned_at ? `deleted by retention ${when(artifact.pruned_at)}` : "—";
  return h("a", { id: "mask-download", href: artifact.download_url, rel: "noreferrer noopener", download: "" },
    "download (signed link, no key needed)");
}

// The mask (fetched with the key, as a blob) tinted on a canvas laid over the source image.
async function drawOverlay(container, job) {
  const img = h("img", { class: "source", alt: `source image: ${job.image}`, referrerpolicy: "no-referrer" });
  const canvas = h("canvas", { class: "mask", "aria-label": `mask for “${job.prompt}”` });
  const frame = h("div", { id: "overlay", class: "overlay" }, img, canvas);
  const slider = h("input", { id: "opacity", type: "range", min: 0, max: 100, value: DEFAULT_OPACITY });
  const shown = h("output", { for: "opacity" }, `${DEFAULT_OPACITY}%`);
  const setOpacity = () => {
    canvas.style.opacity = String(slider.value / 100);
    shown.textContent = `${slider.value}%`;
  };
  slider.addEventListener("input", setOpacity);
  setOpacity();
  const note = h("p", { class: "muted", hidden: true });
  container.replaceChildren(
    h("figure", {}, frame, h("figcaption", {}, "Prompt: ", h("span", { class: "prompt" }, job.prompt))),
    h("p", { class: "slider" }, h("label", { for: "opacity" }, "Mask opacity "), slider, " ", shown),
    note,
  );
  const sourceLoaded = new Promise((resolve) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", () => {
      frame.classList.add("no-source");
      note.hidden = false;
      note.textContent = `The source image could not be loaded from ${job.image}; the mask is shown alone.`;
      resolve();
    }, { once: true });
  });
  img.src = job.image;
  const bitmap = await createImageBitmap(await apiBlob(job.artifact.url));
  tint(canvas, bitmap);
  await sourceLoaded;
  frame.dataset.ready = "true";
}

function tint(canvas, bitmap) {
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const d = pixels.data;
  for (let i = 0; i < d.length; i += 4) {
    const coverage = (d[i] * d[i + 3]) / 255; // the mask's grey level: 255 inside, 0 outside
    d[i] = MASK_TINT[0];
    d[i + 1] = MASK_TINT[1];
    d[i + 2] = MASK_TINT[2];
    d[i + 3] = coverage;
  }
  ctx.putImageData(pixels, 0, 0);
}

// callbacks: events, their deliveries, replays ------------------------------------------------

function eventsView(view, params) {
  const hours = Number(params.get("hours")) || 24;
  const dead = h("tbody");
  const events = h("tbody");
  const span = h("select", { id: "events-window", "aria-label": "Events from the last" },
    [1, 24, 168].map((n) => h("option", { value: n, selected: n === hours }, n === 168 ? "7 days" : `${n} h`)));
  span.addEventListener("change", () => {
    location.hash = `#/events?hours=${span.value}`;
  });
  view.append(
    h("h1", {}, "Callbacks"),
    h("h2", {}, "Dead deliveries"),
    table("dead", ["Event", "URL", "Attempts", "Last status", "Last error", ""], dead),
    h("h2", {}, "Events ", h("span", { class: "muted" }, "from the last "), span),
    table("events", ["Created", "Type", "Batch", "Job", ""], events),
  );
  const memo = {};
  const refresh = async () => {
    const since = new Date(Date.now() - hours * 3600 * 1000).toISOString();
    const [listed, deadList] = await Promise.all([
      api(`/v1/events?since=${encodeURIComponent(since)}`),
      api("/v1/deliveries/dead"),
    ]);
    if (unchanged(memo, { listed, deadList })) return;
    dead.replaceChildren(...deadList.deliveries.map((d) => h("tr", { dataset: { deliveryId: d.id } },
      h("td", {}, h("a", { href: `#/events/${d.event_id}`, class: "mono" }, shortId(d.event_id))),
      h("td", { class: "url" }, d.url),
      h("td", { class: "num" }, d.attempts),
      h("td", { class: "num status" }, d.last_status ?? "—"),
      h("td", { class: "error" }, d.last_error || ""),
      h("td", {}, actionButton("Replay", `/v1/events/${d.event_id}/replay`, refresh)),
    )));
    if (!deadList.deliveries.length) dead.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "None.")));
    events.replaceChildren(...[...listed.events].reverse().map((e) => h("tr", { dataset: { eventId: e.id } },
      h("td", {}, when(e.created_at)),
      h("td", {}, h("span", { class: "chip" }, e.type)),
      h("td", {}, h("a", { href: `#/batches/${e.batch_id}`, class: "mono" }, shortId(e.batch_id))),
      h("td", {}, e.job_id ? h("a", { href: `#/jobs/${e.job_id}`, class: "mono" }, shortId(e.job_id)) : "—"),
      h("td", {}, h("a", { href: `#/events/${e.id}` }, "deliveries")),
    )));
    if (!listed.events.length) events.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No events in this window.")));
  };
  return refresh;
}

function eventView(view, eventId) {
  const facts = h("dl", { class: "facts" });
  const deliveries = h("tbody");
  const payload = h("pre", { class: "payload" });
  const memo = {};
  let refresh;
  const replay = h("p", { class: "job-actions" });
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/events" }, "Callbacks"), " / event"),
    h("h1", {}, "Event ", h("span", { class: "mono" }, eventId)),
    facts,
    replay,
    h("h2", {}, "Deliveries"),
    table("deliveries", ["Target", "URL", "State", "Attempts", "Last status", "Last error", "Attempt log"], deliveries),
    h("h2", {}, "Payload"),
    payload,
  );
  replay.append(actionButton("Replay", `/v1/events/${enc(eventId)}/replay`, () => refresh()));
  refresh = async () => {
    const found = await api(`/v1/events/${enc(eventId)}/deliveries`);
    if (unchanged(memo, found)) return;
    const e = found.event;
    facts.replaceChildren(
      h("dt", {}, "Type"), h("dd", {}, e.type),
      h("dt", {}, "Created"), h("dd", {}, when(e.created_at)),
      h("dt", {}, "Batch"), h("dd", {}, h("a", { href: `#/batches/${e.batch_id}`, class: "mono" }, e.batch_id)),
      h("dt", {}, "Job"), h("dd", {}, e.job_id ? h("a", { href: `#/jobs/${e.job_id}`, class: "mono" }, e.job_id) : "—"),
    );
    deliveries.replaceChildren(...found.deliveries.map(deliveryRow));
    if (!found.deliveries.length) deliveries.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No destinations.")));
    payload.textContent = JSON.stringify(e.payload, null, 2);
  };
  return refresh;
}

function deliveryRow(d) {
  const statusClass = d.last_status === null ? "" : d.last_status < 300 ? "ok" : "bad";
  return h(
    "tr",
    { dataset: { deliveryId: d.id, state: d.state } },
    h("td", {}, d.target),
    h("td", { class: "url" }, d.url),
    h("td", {}, h("span", { class: `chip delivery-${d.state}` }, d.state),
      d.next_attempt_at ? h("div", { class: "muted" }, `next try ${when(d.next_attempt_at)}`) : null),
    h("td", { class: "num" }, d.attempts),
    h("td", { class: `num status ${statusClass}` }, d.last_status ?? "—"),
    h("td", { class: "error" }, d.last_error || ""),
    h("td", {}, h("ol", { class: "attempt-log" }, (d.attempt_log || []).map((a) =>
      h("li", {}, `#${a.n} ${clock(a.at)} `, h("strong", {}, a.status ?? "no answer"), ` ${a.duration_ms} ms`,
        a.error ? h("span", { class: "error" }, ` ${a.error}`) : null)))),
  );
}

// sign-in and routing -------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  route();
  if (message) $("#login-error").textContent = message;
}

let generation = 0;

function route() {
  const current = ++generation;
  const isCurrent = () => current === generation;
  const view = $("#view");
  view.replaceChildren();
  setNotice("");
  const signedIn = Boolean(apiKey());
  $("#login").hidden = signedIn;
  $("#nav").hidden = !signedIn;
  $("#sign-out").hidden = !signedIn;
  $("#updated").textContent = "";
  if (!signedIn) {
    $("#api-key").focus();
    return;
  }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const [section, id] = path.split("/").filter(Boolean).map(decodeURIComponent);
  let refresh;
  if (section === "batches" && id) refresh = batchView(view, id, params);
  else if (section === "jobs" && id) refresh = jobView(view, id);
  else if (section === "events" && id) refresh = eventView(view, id);
  else if (section === "events") refresh = eventsView(view, params);
  else refresh = batchesView(view, params);
  live(isCurrent, refresh);
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#api-key");
  const key = input.value.trim();
  $("#login-error").textContent = "";
  if (!key) return;
  const resp = await fetch("/v1/batches?limit=1", { headers: { authorization: `Bearer ${key}` }, cache: "no-store" })
    .catch(() => null);
  if (!resp || !resp.ok) {
    $("#login-error").textContent = resp && resp.status === 401
      ? "That API key was not accepted. Enter a valid key."
      : "segflow did not answer; try again.";
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  input.value = "";
  route();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", route);
  route();
});
