// The experiment page: fetch the JSON report with the API key as a bearer header and
// draw its tables and SVG plots. No framework, no build step; every text goes in through
// textContent, never as HTML.
"use strict";

const KEY = "gateway-api-key";
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2f6fd6", "#d9622b", "#2a9d5b", "#8e44ad", "#c0392b", "#16a2b8", "#7f8c8d"];
const LATENCY = [["ttft_ms", "TTFT ms"], ["total_ms", "latency ms"], ["tokens_per_second", "tokens/s"]];

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x, percent) {
  if (x === null || x === undefined) return "-";
  if (percent) return (100 * x).toFixed(2) + "%";
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toPrecision(3);
}

function interval(stat, percent) {
  if (!stat || stat.value === null) return "-";
  if (stat.low === null || stat.high === null) return fmt(stat.value, percent);
  return fmt(stat.value, percent) + " [" + fmt(stat.low, percent) + ", " + fmt(stat.high, percent) + "]";
}

function cell(stat, metric, percent) {
  const td = el("td", {"data-metric": metric});
  if (stat && stat.value !== null) td.setAttribute("data-value", String(stat.value));
  td.textContent = stat && stat.value !== null ? fmt(stat.value, percent) : "-";
  if (stat && stat.low !== null && stat.high !== null && stat.value !== null) {
    td.append(" ", el("small", {}, "[" + fmt(stat.low, percent) + ", " + fmt(stat.high, percent) + "]"));
  }
  return td;
}

function colourOf(report) {
  const map = {};
  report.variants.forEach((v, i) => { map[v.name] = COLOURS[i % COLOURS.length]; });
  return map;
}

function feedbackNames(report) {
  const names = new Set();
  for (const v of report.variants) for (const m of Object.keys(v.feedback)) names.add(m);
  return [...names].sort();
}

function summary(report) {
  const box = document.getElementById("summary");
  box.replaceChildren();
  const conf = Math.round(100 * report.settings.confidence);
  const since = report.since === null ? "the start" : new Date(report.since * 1000).toISOString();
  box.append(el("p", {}, report.total + " requests since " + since + ", " + report.compared +
    " compared; route " + (report.route || "-") + "; control " + report.control +
    "; values with " + conf + " % intervals."));
  for (const key of ["fell_back", "unit_missing"]) {
    const item = report.excluded[key];
    box.append(el("p", {"data-excluded": key}, "Excluded, " + key + ": " + item.count +
      (item.share === null ? "" : " (" + fmt(item.share, true) + ")")));
  }
  const srm = report.srm;
  const p = el("p", {id: "srm"});
  if (srm.p_value === null) p.textContent = "Sample ratio: not checked (no weights or no assignments).";
  else if (srm.flagged) {
    p.className = "flag";
    p.textContent = "Sample ratio mismatch (chi-square p = " + srm.p_value.toPrecision(3) +
      " < " + srm.threshold + "): assignment or recording is broken; do not trust the comparison.";
  } else p.textContent = "Sample ratio: ok (chi-square p = " + srm.p_value.toPrecision(3) + ").";
  box.append(p);
}

function variantTable(report) {
  const table = document.getElementById("variants");
  table.replaceChildren();
  const fb = feedbackNames(report);
  const head = el("tr");
  const columns = ["variant", "model", "weight", "n"];
  for (const [, label] of LATENCY) for (const s of ["mean", "p50", "p95"]) columns.push(label + " " + s);
  columns.push("error rate", "cancel rate", ...fb.map((m) => "feedback " + m));
  for (const c of columns) head.append(el("th", {scope: "col"}, c));
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const v of report.variants) {
    const row = el("tr", {"data-variant": v.name});
    if (!v.enough_data) row.className = "sparse";
    const mark = v.control && v.name !== "control" ? " (control)" : "";
    row.append(el("td", {"data-metric": "name"}, v.name + mark));
    row.append(el("td", {"data-metric": "model"}, v.model || "-"));
    row.append(el("td", {"data-metric": "weight"}, v.weight === null ? "-" : String(v.weight)));
    const n = el("td", {"data-metric": "n", "data-value": String(v.n)}, String(v.n));
    if (!v.enough_data) n.append(" ", el("small", {}, "not enough data"));
    row.append(n);
    for (const [metric] of LATENCY) {
      for (const s of ["mean", "p50", "p95"]) row.append(cell(v.metrics[metric][s], metric + "." + s));
    }
    row.append(cell(v.rates.error_rate, "error_rate", true));
    row.append(cell(v.rates.cancel_rate, "cancel_rate", true));
    for (const m of fb) {
      const stat = v.feedback[m];
      row.append(cell(stat, "feedback." + m, stat && stat.kind === "boolean"));
    }
    body.append(row);
  }
  table.append(body);
}

function comparisonTable(report) {
  const table = document.getElementById("comparisons");
  table.replaceChildren();
  const head = el("tr");
  for (const c of ["variant", "metric", "difference", "ratio", "excludes zero"]) head.append(el("th", {scope: "col"}, c));
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const c of report.comparisons) {
    const rows = [];
    if (!c.enough_data) rows.push(["all", null, false]);
    else {
      for (const [metric, label] of LATENCY) {
        for (const s of ["mean", "p50", "p95"]) rows.push([label + " " + s, c.metrics[metric][s], false]);
      }
      rows.push(["error rate", c.metrics.error_rate, true], ["cancel rate", c.metrics.cancel_rate, true]);
      for (const [m, stat] of Object.entries(c.feedback || {})) {
        const kinds = report.variants.map((v) => v.feedback[m] && v.feedback[m].kind);
        rows.push(["feedback " + m, stat, kinds.includes("boolean")]);
      }
    }
    for (const [label, stat, percent] of rows) {
      const tr = el("tr", {"data-variant": c.variant});
      tr.append(el("td", {}, c.variant + " - " + c.against), el("td", {}, label));
      if (stat === null) {
        tr.append(el("td", {colspan: "3"}, "not enough data"));
      } else {
        tr.append(el("td", {}, interval(stat, percent)));
        tr.append(el("td", {}, stat.ratio ? interval(stat.ratio) : "-"));
        const ex = stat.excludes_zero;
        tr.append(el("td", {class: ex ? "excludes" : ""}, ex === null ? "-" : ex ? "yes" : "no"));
      }
      body.append(tr);
    }
  }
  table.append(body);
}

function frame(parent, title, width, height) {
  const box = el("figure", {class: "plot"});
  box.append(el("h3", {}, title));
  const root = svg("svg", {width, height, viewBox: "0 0 " + width + " " + height, role: "img"});
  root.append(svg("title", {}, title));
  box.append(root);
  parent.append(box);
  return root;
}

function legend(root, names, colours, x, y) {
  names.forEach((name, i) => {
    root.append(svg("rect", {x, y: y + i * 16, width: 10, height: 10, fill: colours[name]}));
    root.append(svg("text", {x: x + 14, y: y + 9 + i * 16, "font-size": 11}, name));
  });
}

function axisLabels(root, left, right, bottom, lowText, highText, caption) {
  root.append(svg("line", {x1: left, y1: bottom, x2: right, y2: bottom, stroke: "#888"}));
  root.append(svg("text", {x: left, y: bottom + 14, "font-size": 10}, lowText));
  root.append(svg("text", {x: right, y: bottom + 14, "font-size": 10, "text-anchor": "end"}, highText));
  root.append(svg("text", {x: (left + right) / 2, y: bottom + 14, "font-size": 10, "text-anchor": "middle"}, caption));
}

function intervalPlots(report, colours) {
  const parent = document.getElementById("intervals");
  parent.replaceChildren();
  const metrics = [];
  for (const [metric, label] of LATENCY) {
    for (const s of ["mean", "p95"]) metrics.push([label + " " + s, (v) => v.metrics[metric][s], false]);
  }
  metrics.push(["error rate", (v) => v.rates.error_rate, true], ["cancel rate", (v) => v.rates.cancel_rate, true]);
  for (const m of feedbackNames(report)) metrics.push(["feedback " + m, (v) => v.feedback[m], false]);
  const width = 300, rowH = 22, left = 90, right = width - 12;
  for (const [title, pick, percent] of metrics) {
    const stats = report.variants.map((v) => [v.name, pick(v)]).filter(([, s]) => s && s.value !== null);
    if (!stats.length) continue;
    let lo = Math.min(...stats.map(([, s]) => (s.low === null ? s.value : s.low)));
    let hi = Math.max(...stats.map(([, s]) => (s.high === null ? s.value : s.high)));
    if (hi === lo) { hi += Math.abs(hi) * 0.05 || 1; lo -= Math.abs(lo) * 0.05 || 0; }
    const x = (value) => left + ((value - lo) / (hi - lo)) * (right - left);
    const height = stats.length * rowH + 30;
    const root = frame(parent, title, width, height);
    root.setAttribute("data-plot", "interval");
    stats.forEach(([name, s], i) => {
      const y = 14 + i * rowH;
      root.append(svg("text", {x: 4, y: y + 4, "font-size": 11}, name));
      if (s.low !== null && s.high !== null) {
        root.append(svg("line", {x1: x(s.low), y1: y, x2: x(s.high), y2: y, stroke: colours[name], "stroke-width": 4}));
      }
      root.append(svg("circle", {cx: x(s.value), cy: y, r: 4, fill: "#fff", stroke: colours[name], "stroke-width": 2}));
    });
    axisLabels(root, left, right, height - 14, fmt(lo, percent), fmt(hi, percent), "");
  }
}

function latencyPlots(report, colours) {
  const parent = document.getElementById("latency");
  parent.replaceChildren();
  for (const [metric, label] of [["total_ms", "latency ms"], ["ttft_ms", "TTFT ms"]]) {
    const hist = report.plots.latency[metric];
    const names = Object.keys(hist.counts);
    if (!hist.edges.length || !names.length) continue;
    const width = 420, height = 200, left = 10, right = width - 100, top = 10, bottom = height - 24;
    const root = frame(parent, label + ": share of requests per bin", width, height);
    root.setAttribute("data-plot", "latency");
    const shares = {};
    for (const name of names) {
      const total = hist.counts[name].reduce((a, b) => a + b, 0) || 1;
      shares[name] = hist.counts[name].map((c) => c / total);
    }
    const peak = Math.max(...names.flatMap((n) => shares[n])) || 1;
    const bins = hist.edges.length - 1;
    const bx = (i) => left + (i / bins) * (right - left);
    const by = (share) => bottom - (share / peak) * (bottom - top);
    for (const name of names) {
      let d = "M" + bx(0) + " " + bottom;
      shares[name].forEach((s, i) => { d += " L" + bx(i) + " " + by(s) + " L" + bx(i + 1) + " " + by(s); });
      d += " L" + bx(bins) + " " + bottom;
      root.append(svg("path", {d, fill: "none", stroke: colours[name], "stroke-width": 2}));
    }
    axisLabels(root, left, right, bottom, "0", fmt(hist.edges[bins]), label);
    legend(root, names, colours, right + 10, top);
  }
}

function assignmentPlot(report, colours) {
  const parent = document.getElementById("assignments");
  parent.replaceChildren();
  const data = report.plots.assignments;
  const names = Object.keys(data.counts).filter((n) => data.counts[n].some((c) => c > 0));
  if (!names.length) { parent.append(el("p", {}, "No assignments recorded yet.")); return; }
  const buckets = data.counts[names[0]].length;
  const width = 520, height = 200, left = 34, right = width - 100, top = 10, bottom = height - 24;
  const root = frame(parent, "requests per " + data.bucket_seconds + " s, per variant", width, height);
  root.setAttribute("data-plot", "assignments");
  const peak = Math.max(...names.flatMap((n) => data.counts[n])) || 1;
  const bx = (i) => left + (buckets > 1 ? (i / (buckets - 1)) * (right - left) : (right - left) / 2);
  const by = (c) => bottom - (c / peak) * (bottom - top);
  for (const name of names) {
    const points = data.counts[name].map((c, i) => bx(i) + "," + by(c)).join(" ");
    root.append(svg("polyline", {points, fill: "none", stroke: colours[name], "stroke-width": 2}));
    data.counts[name].forEach((c, i) => root.append(svg("circle", {cx: bx(i), cy: by(c), r: 2, fill: colours[name]})));
  }
  root.append(svg("text", {x: 2, y: top + 8, "font-size": 10}, String(peak)));
  const start = new Date(data.start * 1000).toISOString().replace(".000", "");
  axisLabels(root, left, right, bottom, start, "+" + Math.round((buckets - 1) * data.bucket_seconds) + " s", "");
  legend(root, names, colours, right + 10, top);
}

function draw(report) {
  const colours = colourOf(report);
  summary(report);
  variantTable(report);
  comparisonTable(report);
  intervalPlots(report, colours);
  latencyPlots(report, colours);
  assignmentPlot(report, colours);
  document.getElementById("report").hidden = false;
  const status = document.getElementById("status");
  status.className = "";
  status.textContent = "Report generated " + new Date(report.generated_at * 1000).toISOString() + ".";
  document.body.setAttribute("data-loaded", "true");
}

function setStatus(text, bad) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = bad ? "bad" : "";
}

async function load() {
  const name = document.body.getAttribute("data-experiment");
  const headers = {Accept: "application/json"};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const url = "/v1/experiments/" + encodeURIComponent(name) + "/report" + window.location.search;
  let response;
  try {
    response = await fetch(url, {headers, credentials: "omit", cache: "no-store"});
  } catch (err) {
    setStatus("The gateway did not answer: " + err.message, true);
    return;
  }
  if (response.status === 401) {
    if (key) sessionStorage.removeItem(KEY);
    setStatus(key ? "That API key was refused." : "This gateway needs an API key.", Boolean(key));
    document.getElementById("login").hidden = false;
    return;
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : "HTTP " + response.status;
    setStatus(message, true);
    return;
  }
  document.getElementById("login").hidden = true;
  draw(body);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("api-key");
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    load();
  });
  load();
});
