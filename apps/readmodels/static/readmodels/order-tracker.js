// <waybill-order-tracker>: one order's live status and timeline.
//   order-id="<uuid>"  that order;
//   follow-placed      the order the checkout announces (`waybill:order-placed`);
//   neither            the customer's latest order.
// It loads the order page from the backend-for-frontend (one call: order, timeline, product
// details), then follows `order:<id>` on the shell's realtime connection. An order placed a
// moment ago may not be on the read side yet: then the server refuses the stream ("no such
// order of yours") and the tracker asks again shortly.
import { follow, keepNewer, renderList } from "../frontend/helpers.js";
import { HttpError, getJson } from "./http.js";

const FINAL = new Set(["CONFIRMED", "REJECTED", "CANCELLED"]);
const RETRY_MS = [250, 500, 1000, 2000, 4000];
const MAX_RETRIES = 15; // about 45 s: far longer than an order takes to reach the read side

function time(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.valueOf()) ? "" : at.toLocaleTimeString();
}

class WaybillOrderTracker extends HTMLElement {
  #orders = new Map(); // id -> order document (only the tracked one, kept by version)
  #id = null;
  #stop = null;
  #retries = 0;
  #retryTimer = null;

  connectedCallback() {
    this.innerHTML = `
      <section aria-labelledby="tracker-title">
        <h2 id="tracker-title">Order tracker</h2>
        <div class="message" role="alert"></div>
        <p data-role="empty" class="muted"></p>
        <div data-role="order" hidden>
          <p>Order <code data-role="id"></code></p>
          <p aria-live="polite" aria-atomic="true">Status: <strong class="status" data-role="status"></strong>
            <span data-role="reason" class="muted"></span></p>
          <ul class="list" data-role="lines"></ul>
          <p>Total: <strong data-role="total"></strong></p>
          <h3>Timeline</h3>
          <ol class="timeline" data-role="timeline" aria-live="polite"></ol>
        </div>
      </section>`;
    const id = this.getAttribute("order-id");
    if (id) {
      this.#track(id);
    } else if (this.hasAttribute("follow-placed")) {
      this.#empty("Place an order to follow it here, live.");
    } else {
      this.#latest();
    }
    if (this.hasAttribute("follow-placed")) {
      document.addEventListener("waybill:order-placed", (e) => this.#track(e.detail.order.id, e.detail.order));
    }
  }

  disconnectedCallback() {
    this.#stop?.();
    clearTimeout(this.#retryTimer);
  }

  async #latest() {
    this.#empty("Looking for your latest order…");
    try {
      const orders = await getJson("/api/v1/read/orders/");
      const newest = [...orders].sort((a, b) =>
        (b.placed_at ?? b.updated_at).localeCompare(a.placed_at ?? a.updated_at))[0];
      if (newest) this.#track(newest.id, newest);
      else this.#empty("You have no orders yet.");
    } catch (error) {
      this.#error(error.message);
    }
  }

  #track(id, known = null) {
    if (id !== this.#id) {
      this.#stop?.();
      clearTimeout(this.#retryTimer);
      this.#orders.clear();
      this.#id = id;
      this.#retries = 0;
      this.#follow();
      this.#load();
    }
    // What the orders API answered (202) is shown until the read side speaks; its version
    // counts the order's own changes, not the read model's, so it never outranks a document.
    if (known?.id === id && known.status) this.#apply([{ ...known, version: -1 }]);
    else this.#render();
  }

  #follow() {
    const id = this.#id;
    this.#stop = follow(`order:${id}`, (documents) => this.#apply(documents), (reason) => {
      if (id !== this.#id) return;
      if (this.#retries >= MAX_RETRIES) {
        this.#error(`This order cannot be followed live: ${reason}.`);
        return;
      }
      // Not on the read side yet (or not yours): ask again, a little later each time.
      const delay = RETRY_MS[Math.min(this.#retries, RETRY_MS.length - 1)];
      this.#retries += 1;
      this.#retryTimer = setTimeout(() => {
        if (id !== this.#id) return;
        this.#stop?.();
        this.#follow();
        this.#load();
      }, delay);
    });
  }

  async #load() {
    const id = this.#id;
    try {
      const page = await getJson(`/api/v1/read/pages/orders/${id}/`);
      if (id === this.#id) this.#apply([page.order ?? page], page.products ?? null);
    } catch (error) {
      // 404: not projected yet; the stream brings it. Anything else is worth saying.
      if (!(error instanceof HttpError && error.status === 404) && id === this.#id) this.#error(error.message);
    }
  }

  #apply(documents, products = null) {
    if (products) this.products = products;
    for (const order of documents) if (order?.id === this.#id) keepNewer(this.#orders, order.id, order);
    this.#render();
  }

  #empty(text) {
    this.querySelector("[data-role=empty]").textContent = text;
    this.querySelector("[data-role=order]").hidden = true;
  }

  #error(text) {
    const alert = this.querySelector("[role=alert]");
    alert.innerHTML = `<p class="error"></p>`;
    alert.firstChild.textContent = text;
  }

  #render() {
    const order = this.#orders.get(this.#id);
    this.querySelector("[role=alert]").textContent = "";
    if (!order) {
      this.#empty("Waiting for the order to reach the read side…");
      return;
    }
    this.querySelector("[data-role=empty]").textContent = "";
    this.querySelector("[data-role=order]").hidden = false;
    this.dataset.status = order.status;
    this.dataset.final = String(FINAL.has(order.status));
    this.querySelector("[data-role=id]").textContent = order.id;
    const status = this.querySelector("[data-role=status]");
    status.textContent = order.status;
    status.className = `status status-${order.status}`;
    this.querySelector("[data-role=reason]").textContent = order.reason ? `— ${order.reason}` : "";
    const names = new Map((this.products ?? []).map((p) => [p.sku, p.name]));
    this.querySelector("[data-role=lines]").replaceChildren(...(order.lines ?? []).map((line) => {
      const li = document.createElement("li");
      li.textContent = `${line.quantity} × ${line.name ?? names.get(line.sku) ?? line.sku}` +
        (line.unit_price ? ` at ${line.unit_price}${order.currency ? ` ${order.currency}` : ""}` : "");
      return li;
    }));
    this.querySelector("[data-role=total]").textContent =
      order.total == null ? "" : `${order.total}${order.currency ? ` ${order.currency}` : ""}`;
    const steps = order.timeline ?? [];
    renderList(this.querySelector("[data-role=timeline]"), steps.map((step) => {
      const li = document.createElement("li");
      li.textContent = [step.step, step.status].filter(Boolean).join(": ") + (step.reason ? ` (${step.reason})` : "");
      if (step.at) {
        const at = document.createElement("time");
        at.dateTime = step.at;
        at.textContent = time(step.at);
        li.append(at);
      }
      return li;
    }), "No steps recorded yet.");
  }
}

customElements.define("waybill-order-tracker", WaybillOrderTracker);
