// <waybill-dashboard> (staff): orders per status, outbox backlog per context, dead letters,
// the processes that keep crashing (as each context's supervisor reports them), and
// throughput over the last minutes as a small inline SVG chart (no library). It follows
// the `dashboard` stream, whose one document is replaced as a whole on every change.
// Sales per product per day (the read API's /sales/) are read again when the dashboard
// changes, at most every few seconds.
import { follow } from "../frontend/helpers.js";

// Drawn widest first, so a series hidden under another (placed = confirmed) still shows.
const SERIES = [
  ["placed", "#143d59", 7], ["confirmed", "#2b7a0b", 4], ["rejected", "#a4161a", 2.5], ["cancelled", "#8a8f96", 1.5],
];
const SVG = "http://www.w3.org/2000/svg";
// What each state of a crashing process means (waybill.supervisor).
const STATES = {
  BACKOFF: "fails to start, retried with backoff",
  FATAL: "given up on by the supervisor",
  CRASH_LOOP: "crashes again and again, restarted each time",
};

const SALES_DAYS = 14;
const SALES_EVERY_MS = 5000;
const PALETTE = ["#143d59", "#2b7a0b", "#a4161a", "#c77d02", "#5a3d8a", "#0f7c86", "#8a8f96"];

function svg(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

class WaybillDashboard extends HTMLElement {
  #document = null;
  #salesAt = 0;
  #salesTimer = null;

  connectedCallback() {
    this.innerHTML = `
      <div class="message" role="alert"></div>
      <section aria-labelledby="dash-status">
        <h2 id="dash-status">Orders by status</h2>
        <dl class="cards" data-role="statuses" aria-live="polite"><div><dt>Orders</dt><dd>…</dd></div></dl>
      </section>
      <section aria-labelledby="dash-outbox">
        <h2 id="dash-outbox">Outboxes</h2>
        <div class="scroll"><table class="responsive">
          <thead><tr><th scope="col">Context</th><th scope="col" class="num">Pending</th>
            <th scope="col" class="num">Oldest pending</th><th scope="col" class="num">Parked</th>
            <th scope="col" class="num">Dead letters</th></tr></thead>
          <tbody data-role="outboxes"></tbody>
        </table></div>
      </section>
      <section aria-labelledby="dash-processes">
        <h2 id="dash-processes">Processes</h2>
        <p data-role="processes-ok">No process is reported crashing.</p>
        <div class="scroll" data-role="processes-alert"><table class="responsive" data-role="processes-table" hidden>
          <thead><tr><th scope="col">Process</th><th scope="col">Context</th><th scope="col">State</th>
            <th scope="col">Reported</th></tr></thead>
          <tbody data-role="processes"></tbody>
        </table></div>
      </section>
      <section aria-labelledby="dash-throughput" class="chart">
        <h2 id="dash-throughput">Throughput per minute</h2>
        <ul class="legend">${SERIES.map(([name, color]) =>
          `<li><span style="background:${color}"></span>${name}</li>`).join("")}</ul>
        <figure data-role="chart"></figure>
      </section>
      <section aria-labelledby="dash-sales" class="chart">
        <h2 id="dash-sales">Sales per product per day</h2>
        <ul class="legend" data-role="sales-legend"></ul>
        <figure data-role="sales"><p class="muted">No sales in the last ${SALES_DAYS} days.</p></figure>
      </section>`;
    follow("dashboard", (documents) => {
      const latest = documents.at(-1);
      if (latest && (!this.#document || (latest.version ?? 0) >= (this.#document.version ?? 0))) {
        this.#document = latest;
        this.#render();
        this.#salesSoon();
      }
    }, (reason) => {
      this.querySelector("[role=alert]").textContent = `The dashboard cannot be followed: ${reason}.`;
    });
  }

  #render() {
    const doc = this.#document;
    const statuses = Object.entries(doc.orders_by_status ?? {}).sort();
    this.querySelector("[data-role=statuses]").replaceChildren(...(statuses.length ? statuses : [["orders", 0]])
      .map(([status, count]) => {
        const div = document.createElement("div");
        div.innerHTML = `<dt></dt><dd></dd>`;
        div.dataset.status = status;
        div.firstChild.textContent = status;
        div.lastChild.textContent = count;
        return div;
      }));
    this.querySelector("[data-role=outboxes]").replaceChildren(...(doc.outboxes ?? []).map((box) => {
      const tr = document.createElement("tr");
      tr.dataset.context = box.context;
      const age = box.oldest_pending_age_s == null ? "—" : `${Number(box.oldest_pending_age_s).toFixed(1)} s`;
      for (const [label, value, numeric] of [["Context", box.context], ["Pending", box.pending, true],
        ["Oldest pending", age, true], ["Parked", box.parked, true], ["Dead letters", box.dead_letters, true]]) {
        const td = document.createElement("td");
        td.dataset.label = label;
        td.textContent = value ?? 0;
        if (numeric) td.className = "num";
        if (label === "Dead letters" && value > 0) td.classList.add("low");
        tr.append(td);
      }
      return tr;
    }));
    this.#processes(doc.crashing_processes ?? []);
    this.#chart(doc.throughput ?? []);
  }

  // Loud on purpose: a process that keeps crashing, whatever its supervisor does about it.
  #processes(crashing) {
    this.querySelector("[data-role=processes-ok]").hidden = crashing.length > 0;
    const table = this.querySelector("[data-role=processes-table]");
    table.hidden = crashing.length === 0;
    // The alert on the wrapper: the table keeps its table semantics for screen readers.
    const wrapper = this.querySelector("[data-role=processes-alert]");
    if (crashing.length) wrapper.setAttribute("role", "alert");
    else wrapper.removeAttribute("role");
    this.querySelector("[data-role=processes]").replaceChildren(...crashing.map((process) => {
      const tr = document.createElement("tr");
      tr.dataset.process = process.name;
      const at = new Date(process.measured_at);
      for (const [label, value] of [["Process", process.name], ["Context", process.context],
        ["State", `${process.state}: ${STATES[process.state] ?? "crashing"}`],
        ["Reported", Number.isNaN(at.valueOf()) ? process.measured_at : at.toLocaleTimeString()]]) {
        const td = document.createElement("td");
        td.dataset.label = label;
        td.textContent = value;
        if (label === "State") td.classList.add("low");
        tr.append(td);
      }
      return tr;
    }));
  }

  // At most every SALES_EVERY_MS: the dashboard changes far more often than a day's sales need showing.
  #salesSoon() {
    if (this.#salesTimer) return;
    const wait = Math.max(0, this.#salesAt + SALES_EVERY_MS - Date.now());
    this.#salesTimer = setTimeout(async () => {
      this.#salesTimer = null;
      this.#salesAt = Date.now();
      try {
        const response = await fetch(`/api/v1/read/sales/?days=${SALES_DAYS}`, {
          credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.ok) this.#sales(await response.json());
      } catch {
        // Shown again at the next change; the rest of the dashboard does not depend on it.
      }
    }, wait);
  }

  #sales(rows) {
    const figure = this.querySelector("[data-role=sales]");
    if (!rows.length) return;
    const days = [...new Set(rows.map((row) => row.day))].sort();
    const totals = new Map();
    for (const row of rows) totals.set(row.sku, (totals.get(row.sku) ?? 0) + Number(row.revenue));
    // The six best sellers by revenue have their own colour; the rest are "other".
    const named = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, PALETTE.length - 1).map(([sku]) => sku);
    const series = (sku) => (named.includes(sku) ? sku : "other");
    const stacks = new Map(days.map((day) => [day, new Map()]));
    for (const row of rows) {
      const stack = stacks.get(row.day);
      stack.set(series(row.sku), (stack.get(series(row.sku)) ?? 0) + row.quantity);
    }
    const order = [...named, ...(named.length < totals.size ? ["other"] : [])];
    const width = 800, height = 220, pad = 30;
    const max = Math.max(1, ...[...stacks.values()].map((stack) => [...stack.values()].reduce((a, b) => a + b, 0)));
    const band = (width - 2 * pad) / days.length;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    const title = svg("title");
    title.textContent = `Units sold per day over the last ${days.length} days with sales: ` +
      days.map((day) => `${day}: ${[...stacks.get(day).values()].reduce((a, b) => a + b, 0)}`).join(", ");
    chart.append(title);
    days.forEach((day, i) => {
      let y = height - pad;
      for (const name of order) {
        const units = stacks.get(day).get(name) ?? 0;
        if (!units) continue;
        const h = (units * (height - 2 * pad)) / max;
        y -= h;
        const bar = svg("rect", { x: (pad + i * band + band * 0.15).toFixed(1), y: y.toFixed(1),
          width: (band * 0.7).toFixed(1), height: h.toFixed(1), fill: PALETTE[order.indexOf(name)] ?? PALETTE.at(-1),
          "data-day": day, "data-series": name });
        const tip = svg("title");
        tip.textContent = `${day} ${name}: ${units}`;
        bar.append(tip);
        chart.append(bar);
      }
      const label = svg("text", { x: pad + i * band + band / 2, y: height - 8, "font-size": 11, fill: "#56616c",
        "text-anchor": "middle" });
      label.textContent = day.slice(5);
      chart.append(label);
    });
    const top = svg("text", { x: 4, y: pad, "font-size": 12, fill: "#56616c" });
    top.textContent = String(max);
    chart.append(top);
    figure.replaceChildren(chart);
    this.querySelector("[data-role=sales-legend]").replaceChildren(...order.map((name, i) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.style.background = PALETTE[i] ?? PALETTE.at(-1);
      li.append(swatch, name);
      return li;
    }));
  }

  #chart(minutes) {
    const width = 800, height = 220, pad = 30;
    const max = Math.max(1, ...minutes.flatMap((m) => SERIES.map(([name]) => m[name] ?? 0)));
    const x = (i) => pad + (minutes.length < 2 ? (width - 2 * pad) / 2 : (i * (width - 2 * pad)) / (minutes.length - 1));
    const y = (v) => height - pad - (v * (height - 2 * pad)) / max;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    const total = minutes.reduce((sum, m) => sum + (m.placed ?? 0), 0);
    const title = svg("title");
    title.textContent = `Orders per minute over the last ${minutes.length} minutes: ${total} placed, ` +
      SERIES.slice(1).map(([name]) => `${minutes.reduce((s, m) => s + (m[name] ?? 0), 0)} ${name}`).join(", ");
    chart.append(title);
    chart.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#d5dbe1" }));
    const top = svg("text", { x: 4, y: pad, "font-size": 12, fill: "#56616c" });
    top.textContent = String(max);
    chart.append(top);
    for (const [name, color, weight] of SERIES) {
      const points = minutes.map((m, i) => `${x(i).toFixed(1)},${y(m[name] ?? 0).toFixed(1)}`).join(" ");
      if (points) chart.append(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": weight, "stroke-linejoin": "round", "data-series": name }));
    }
    if (minutes.length) {
      for (const [i, label] of [[0, minutes[0].minute], [minutes.length - 1, minutes.at(-1).minute]]) {
        const text = svg("text", { x: x(i), y: height - 8, "font-size": 12, fill: "#56616c",
          "text-anchor": i ? "end" : "start" });
        const at = new Date(label);
        text.textContent = Number.isNaN(at.valueOf()) ? String(label) : at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        chart.append(text);
      }
    }
    this.querySelector("[data-role=chart]").replaceChildren(chart);
  }
}

customElements.define("waybill-dashboard", WaybillDashboard);
