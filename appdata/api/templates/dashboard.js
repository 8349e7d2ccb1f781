// Both dashboard pages: read the filters, fetch the JSON, draw each section as a Plotly chart
// beside its table, offer each table as CSV. The server has already withheld every group under
// k users; this script only shows what it is sent.
"use strict";

const PAGE = () => document.body.dataset.page;
const FMT = new Intl.NumberFormat("en-US");

function params() {
  const form = document.getElementById("filters");
  const out = new URLSearchParams();
  for (const el of form.elements) {
    if (el.name && el.value) out.set(el.name, el.value);
  }
  if (PAGE() === "app") out.set("app", new URLSearchParams(location.search).get("app") || "");
  return out;
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  if (!select) return;
  for (const value of values) {
    const option = document.createElement("option");
    option.value = option.textContent = value;
    select.appendChild(option);
  }
}

function restoreFilters() {
  const query = new URLSearchParams(location.search);
  for (const el of document.getElementById("filters").elements) {
    if (el.name && query.get(el.name)) el.value = query.get(el.name);
  }
}

// Text a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading single
// quote (OWASP's CSV-injection advice); numbers, negative ones included, stay numbers.
const FORMULA_START = /^[=+\-@\t\r]/;

function csvOf(section) {
  const quote = v => {
    let s = v === null || v === undefined ? "" : String(v);
    if (typeof v === "string" && FORMULA_START.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  };
  return [section.columns, ...section.rows].map(r => r.map(quote).join(",")).join("\r\n") + "\r\n";
}

function download(name, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
}

function cell(column, value) {
  const td = document.createElement("td");
  if (value === null || value === undefined) {
    td.textContent = "–";
    td.title = "not published: fewer than k users";
  } else if (column === "app") {
    const a = document.createElement("a");
    const link = new URLSearchParams({app: value});  // the date range and grain follow to the app page
    for (const name of ["start", "end", "grain"]) if (params().get(name)) link.set(name, params().get(name));
    a.href = "/dashboard/app?" + link.toString();
    a.textContent = value;
    td.appendChild(a);
  } else {
    td.textContent = typeof value === "number" ? FMT.format(value) : value;
  }
  td.dataset.value = value === null || value === undefined ? "" : String(value);
  return td;
}

function table(key, section) {
  const t = document.createElement("table");
  t.id = "table-" + key;
  const head = t.createTHead().insertRow();
  for (const c of section.columns) {
    const th = document.createElement("th");
    th.textContent = c.replace(/_/g, " ");
    head.appendChild(th);
  }
  const body = t.createTBody();
  for (const row of section.rows) {
    const tr = body.insertRow();
    row.forEach((v, i) => tr.appendChild(cell(section.columns[i], v)));
  }
  return t;
}

// Plotly reads every label it draws as its own markup (<a href> links, <span style>, <b>, <br>,
// &entities;), and labels here are ingested text (app names): each one goes through plotlyText
// so it shows as the literal text it is. Escaping is one-to-one, so distinct labels stay distinct.
function plotlyText(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function column(section, name) {
  const i = section.columns.indexOf(name);
  return section.rows.map(r => r[i]);
}

const DAY = 86400000;
const STEP = {day: DAY, week: 7 * DAY, month: 28 * DAY};

// A true date axis: one bar per period at its start, empty periods left empty, ticks never
// finer than the period (no hours under a single bar).
function timeAxis(keys, grain) {
  const step = STEP[grain];
  const times = keys.map(k => Date.parse(k));
  const first = Math.min(...times), last = Math.max(...times);
  const axis = {type: "date", range: [new Date(first - step).toISOString(), new Date(last + 2 * step).toISOString()],
                tickformat: grain === "month" ? "%b %Y" : "%b %d\n%Y"};
  if ((last - first) / step < 8) axis.dtick = grain === "month" ? "M1" : STEP[grain];
  return axis;
}

// Each section's chart: true date axes for time series (bars, so empty periods stay empty).
function traces(key, section) {
  const first = section.columns[0];
  const isTime = first === "period_start";
  const keys = isTime ? column(section, first) : column(section, first).map(plotlyText);
  const median = section.columns.find(c => c.startsWith("category_median"));
  const value = section.columns.includes("share_pct") ? "share_pct"
    : section.columns.includes("avg_minutes") ? "avg_minutes"
    : section.columns.includes("users_both") ? "users_both" : "downloads";
  const horizontal = !isTime && keys.length > 8;
  const bar = (name, values) => horizontal
    ? {type: "bar", orientation: "h", name: plotlyText(name), y: keys, x: values}
    : {type: "bar", name: plotlyText(name), x: keys, y: values};
  const out = [bar(PAGE() === "app" ? "this app" : value.replace(/_/g, " "), column(section, value))];
  if (isTime) {  // each bar spans its period (explicit width: one lone bar must not shrink to a line)
    const step = STEP[section.grain];
    const middles = keys.map(k => new Date(Date.parse(k) + step / 2).toISOString());
    out[0] = {...out[0], x: middles, width: keys.map(() => 0.9 * step)};
  }
  if (median) {
    const m = column(section, median);
    out.push(isTime ? {type: "scatter", mode: "markers", name: plotlyText("category median"), x: out[0].x, y: m,
                       marker: {symbol: "line-ew-open", size: 18, line: {width: 3}}}
                    : bar("category median", m));
  }
  const layout = {margin: {t: 10, r: 10, b: 80, l: horizontal ? 160 : 50}, barmode: "group",
                  showlegend: out.length > 1, legend: {orientation: "h", y: -0.3}, height: horizontal ? 40 + 22 * keys.length : 320};
  if (isTime) layout.xaxis = timeAxis(keys, section.grain);
  else if (horizontal) layout.yaxis = {autorange: "reversed", type: "category"};
  else layout.xaxis = {type: "category"};
  return [out, layout];
}

// The app of the per-app page, from its URL: the heading names it even when no data comes back.
function appName() {
  return new URLSearchParams(location.search).get("app") || "";
}

function setHeading(app, category) {
  if (PAGE() !== "app") return;
  document.getElementById("app-name").textContent = app;
  document.getElementById("app-category").textContent = category
    ? "Category " + category + "; compared with the median app of that category." : "";
  document.title = (app || "App") + " · appdata";
}

// Nothing to draw: the page says why (the server's reason), never a stale "Loading…".
function showEmpty(message, kind) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = kind;
  document.getElementById("sections").replaceChildren();
  document.getElementById("total-downloads").textContent = "–";
  document.getElementById("total-users").textContent = "–";
  const freshness = document.getElementById("freshness");
  if (freshness.textContent === "Loading…") freshness.textContent = "";
  setHeading(appName(), "");
  document.body.dataset.state = "empty";
}

function render(data) {
  const main = document.getElementById("sections");
  main.replaceChildren();
  document.getElementById("total-downloads").textContent = data.totals ? FMT.format(data.totals.downloads) : "–";
  document.getElementById("total-users").textContent = data.totals ? FMT.format(data.totals.users) : "–";
  const f = data.freshness;
  document.getElementById("freshness").textContent = f
    ? `Every number below comes from mart_download_facts, rebuilt ${f.built_at} (UTC), downloads through ${f.data_through}.`
    : "No mart built yet: the dashboard fills once the analytics marts have run.";
  document.getElementById("privacy").textContent =
    `Groups of fewer than ${data.k} distinct users are never shown; each panel says how many were withheld.`;
  const status = document.getElementById("status");
  status.className = "notice";
  status.textContent = !f ? ""
    : data.totals ? ""
    : `Fewer than ${data.k} distinct users match these filters, so no total is published.`;
  if (PAGE() === "app") setHeading(data.app, data.category);
  for (const [key, section] of Object.entries(data.sections)) {
    const panel = document.createElement("section");
    panel.className = "panel";
    panel.id = "panel-" + key;
    const h2 = document.createElement("h2");
    h2.textContent = section.title;
    const chart = document.createElement("div");
    chart.className = "chart";
    chart.id = "chart-" + key;
    const side = document.createElement("div");
    side.className = "side";
    const button = document.createElement("button");
    button.type = "button";
    button.id = "csv-" + key;
    button.textContent = "Download CSV";
    button.addEventListener("click", () => download(`${PAGE()}-${key}.csv`, csvOf(section)));
    const note = document.createElement("p");
    note.className = "note";
    note.id = "withheld-" + key;
    note.textContent = `${section.suppressed} group(s) withheld (under ${data.k} users, or revealing one). ` +
      `Source: ${section.source}.`;
    side.append(button, note, table(key, section));
    panel.append(h2, chart, side);
    main.appendChild(panel);
    if (section.rows.length) {
      const [data_, layout] = traces(key, section);
      Plotly.newPlot(chart, data_, layout, {displaylogo: false, responsive: true});
    } else {
      const why = section.note || "nothing to show for these filters";
      chart.className = "chart empty";
      chart.textContent = why.charAt(0).toUpperCase() + why.slice(1) + ".";
    }
  }
}

async function refresh() {
  const status = document.getElementById("status");
  const query = params();
  history.replaceState(null, "", location.pathname + "?" + query.toString());
  const url = (PAGE() === "app" ? "/dashboard/data/app?" : "/dashboard/data/overview?") + query.toString();
  status.textContent = "Loading…";
  status.className = "";
  document.body.dataset.state = "loading";
  let response, body;
  try {
    response = await fetch(url);
    body = await response.json();
  } catch (error) {
    showEmpty(`Could not load the data (${error.message || error}); change a filter or reload to retry.`, "error");
    return;
  }
  if (!response.ok) {
    const why = body.detail || response.statusText;
    // 404: the app has no page yet (no downloads, or under k users): a reason, not a failure.
    showEmpty(why.charAt(0).toUpperCase() + why.slice(1) + ".", response.status === 404 ? "notice" : "error");
    return;
  }
  render(body);
  document.body.dataset.state = "ready";
}

async function loadOptions() {
  try {
    const response = await fetch("/dashboard/data/options");
    if (response.ok) return await response.json();
  } catch (error) {
    // the overview's own request says what went wrong; the filters just stay at "All"
  }
  return {categories: [], apps: [], states: [], age_bands: []};
}

async function start() {
  if (PAGE() === "app") setHeading(appName(), "");
  if (PAGE() === "overview") {
    const options = await loadOptions();
    fillSelect("f-category", options.categories);
    fillSelect("f-app", options.apps);
    fillSelect("f-state", options.states);
    fillSelect("f-age_band", options.age_bands);
    for (const id of ["f-start", "f-end"]) {
      const input = document.getElementById(id);
      if (options.min_date) input.min = options.min_date;
      if (options.max_date) input.max = options.max_date;
    }
  }
  restoreFilters();
  document.getElementById("filters").addEventListener("change", refresh);
  await refresh();
}

document.addEventListener("DOMContentLoaded", start);
