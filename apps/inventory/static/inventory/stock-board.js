// <waybill-stock-board> (staff): every product's on hand, reserved and available, live
// (the `stock` stream), with on-hand editable in place through the inventory API. Refusals
// (e.g. below what is reserved) are shown beside the row and announced. A product's stock
// ledger (every entry that made its numbers: received, adjusted, reserved, released) opens
// below the board.
import { follow, keepNewer, renderTable } from "../frontend/helpers.js";

const csrf = () =>
  document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";

function reasons(body) {
  if (!body || typeof body !== "object") return "";
  return Object.entries(body).map(([field, value]) =>
    `${field === "detail" || field === "non_field_errors" ? "" : `${field}: `}${[value].flat().join(" ")}`).join(" ");
}

async function productLedger(sku) {
  let response;
  try {
    response = await fetch(`/api/v1/inventory/products/${encodeURIComponent(sku)}/ledger/`, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    });
  } catch {
    throw new Error("The inventory service cannot be reached right now.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(reasons(body) || `The ledger could not be read (HTTP ${response.status}).`);
  return body;
}

const signed = (n) => (n > 0 ? `+${n}` : n === 0 ? "" : String(n));

async function productUpdate(sku, changes) {
  let response;
  try {
    response = await fetch(`/api/v1/inventory/products/${encodeURIComponent(sku)}/`, {
      method: "PATCH", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(changes),
    });
  } catch {
    throw new Error("The inventory service cannot be reached right now.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(reasons(body) || `The change was refused (HTTP ${response.status}).`);
  return body;
}

class WaybillStockBoard extends HTMLElement {
  #items = new Map(); // sku -> stock_item document

  connectedCallback() {
    this.innerHTML = `
      <section aria-labelledby="stock-title">
        <h2 id="stock-title" class="vh">Stock</h2>
        <div class="message" role="alert"></div>
        <p class="message" role="status" aria-live="polite"></p>
        <p class="muted" data-role="empty">Loading stock…</p>
        <div class="scroll"><table class="responsive" hidden>
          <thead><tr><th scope="col">Product</th><th scope="col" class="num">On hand</th>
            <th scope="col" class="num">Reserved</th><th scope="col" class="num">Available</th>
            <th scope="col">Change on hand</th><th scope="col">Ledger</th></tr></thead>
          <tbody></tbody>
        </table></div>
        <section data-role="ledger" hidden aria-live="polite">
          <h3></h3>
          <div class="scroll"><table class="responsive">
            <thead><tr><th scope="col" class="num">Version</th><th scope="col">Entry</th>
              <th scope="col" class="num">On hand</th><th scope="col" class="num">Reserved</th>
              <th scope="col">Order</th><th scope="col">Recorded</th></tr></thead>
            <tbody></tbody>
          </table></div>
        </section>
      </section>`;
    follow("stock", (documents) => {
      for (const item of documents) keepNewer(this.#items, item.sku, item);
      this.#render();
    }, (reason) => this.#alert(`The stock board cannot be followed: ${reason}.`));
  }

  #alert(text) {
    const alert = this.querySelector("[role=alert]");
    alert.innerHTML = text ? `<p class="error"></p>` : "";
    if (text) alert.firstChild.textContent = text;
  }

  #render() {
    const items = [...this.#items.values()].sort((a, b) => a.sku.localeCompare(b.sku));
    // In place, so a live change never wipes what staff are typing or moves their focus.
    renderTable(this.querySelector("table"), items, {
      key: "sku", create: (item) => this.#row(item), empty: this.querySelector("[data-role=empty]"),
      update: (row, item) => {
        row.querySelector("[data-field=name]").textContent = `${item.name} (${item.sku})`;
        for (const field of ["on_hand", "reserved", "available"]) {
          row.querySelector(`[data-field=${field}]`).textContent = item[field];
        }
        row.querySelector("[data-field=available]").classList.toggle("low", item.available === 0);
        const input = row.querySelector("input");
        if (document.activeElement !== input && !input.dataset.dirty) input.value = item.on_hand;
        input.min = String(item.reserved);
      },
    });
  }

  async #showLedger(sku) {
    const panel = this.querySelector("section[data-role=ledger]");
    const name = this.#items.get(sku)?.name ?? sku;
    this.#alert("");
    let ledger;
    try {
      ledger = await productLedger(sku);
    } catch (error) {
      this.#alert(`${name}: ${error.message}`);
      return;
    }
    panel.querySelector("h3").textContent =
      `Ledger of ${name} (${sku}): ${ledger.on_hand} on hand, ${ledger.reserved} reserved at version ${ledger.version}`;
    const body = panel.querySelector("tbody");
    body.replaceChildren(...ledger.entries.map((entry) => {
      const row = document.createElement("tr");
      for (const [label, text, num] of [
        ["Version", entry.version, true], ["Entry", entry.kind, false],
        ["On hand", signed(entry.on_hand_delta), true], ["Reserved", signed(entry.reserved_delta), true],
        ["Order", entry.order_id ?? "", false], ["Recorded", new Date(entry.recorded_at).toLocaleString(), false],
      ]) {
        const cell = document.createElement("td");
        cell.dataset.label = label;
        if (num) cell.className = "num";
        cell.textContent = String(text);
        row.append(cell);
      }
      return row;
    }));
    panel.hidden = false;
  }

  #row(item) {
    const row = document.createElement("tr");
    const id = `on-hand-${item.sku}`;
    row.innerHTML = `
      <td data-label="Product" data-field="name"></td>
      <td data-label="On hand" class="num" data-field="on_hand"></td>
      <td data-label="Reserved" class="num" data-field="reserved"></td>
      <td data-label="Available" class="num" data-field="available"></td>
      <td data-label="Change"><form class="inline" novalidate>
        <label class="vh" for="${id}"></label>
        <input id="${id}" type="number" min="0" max="1000000" inputmode="numeric" required>
        <button type="submit">Save</button></form></td>
      <td data-label="Ledger"><button type="button" data-role="ledger">Ledger</button></td>`;
    row.querySelector("label").textContent = `On hand of ${item.name}`;
    row.querySelector("button[type=submit]").setAttribute("aria-label", `Save on hand of ${item.name}`);
    const ledgerButton = row.querySelector("button[data-role=ledger]");
    ledgerButton.setAttribute("aria-label", `Stock ledger of ${item.name}`);
    ledgerButton.addEventListener("click", () => this.#showLedger(item.sku));
    const input = row.querySelector("input");
    input.addEventListener("input", () => (input.dataset.dirty = "1"));
    row.querySelector("form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const onHand = Number(input.value);
      const name = this.#items.get(item.sku)?.name ?? item.sku;
      this.#alert("");
      if (!Number.isInteger(onHand) || input.value === "") {
        this.#alert(`${name}: on hand must be a whole number.`);
        input.focus();
        return;
      }
      try {
        await productUpdate(item.sku, { on_hand: onHand });
        delete input.dataset.dirty;
        this.querySelector("[role=status]").textContent = `${name}: on hand set to ${onHand}.`;
      } catch (error) {
        this.#alert(`${name}: ${error.message}`);
        input.focus();
      }
    });
    return row;
  }
}

customElements.define("waybill-stock-board", WaybillStockBoard);
