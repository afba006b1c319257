// <waybill-catalog>: the products with their live availability. "Add to cart" dispatches
// `waybill:add-to-cart` {sku, name, price, quantity}; the cart decides what to do with it.
import { follow, keepNewer, renderTable } from "../frontend/helpers.js";
import { money } from "./api.js";

class WaybillCatalog extends HTMLElement {
  #items = new Map(); // sku -> catalog_item document

  connectedCallback() {
    this.innerHTML = `
      <section aria-labelledby="catalog-title">
        <h2 id="catalog-title">Catalog</h2>
        <p class="muted" data-role="empty">Loading the catalog…</p>
        <table class="responsive" hidden>
          <caption class="muted">Availability updates live.</caption>
          <thead><tr><th scope="col">Product</th><th scope="col" class="num">Price</th>
            <th scope="col" class="num">Available</th><th scope="col">Quantity</th><th scope="col"><span class="vh">Action</span></th></tr></thead>
          <tbody></tbody>
        </table>
      </section>`;
    follow("catalog", (documents) => {
      for (const item of documents) keepNewer(this.#items, item.sku, item);
      this.#render();
    });
  }

  #render() {
    const items = [...this.#items.values()].sort((a, b) => a.sku.localeCompare(b.sku));
    // In place, so a live change never steals focus or a typed quantity.
    renderTable(this.querySelector("table"), items, {
      key: "sku", create: (item) => this.#row(item), empty: this.querySelector("[data-role=empty]"),
      update: (row, item) => {
        row.querySelector("[data-field=name]").textContent = item.name;
        row.querySelector("[data-field=price]").textContent = money(item.price);
        const available = row.querySelector("[data-field=available]");
        available.textContent = item.available;
        available.classList.toggle("low", item.available === 0);
        row.querySelector("input").max = String(Math.min(100, Math.max(1, item.available)));
        row.querySelector("button").disabled = item.available === 0;
      },
    });
  }

  #row(item) {
    const row = document.createElement("tr");
    const id = `qty-${item.sku}`;
    row.innerHTML = `
      <td data-label="Product"><span><span data-field="name"></span> <span class="muted"></span></span></td>
      <td data-label="Price" class="num" data-field="price"></td>
      <td data-label="Available" class="num" data-field="available"></td>
      <td data-label="Quantity"><label class="vh" for="${id}"></label>
        <input id="${id}" type="number" min="1" max="100" value="1" inputmode="numeric"></td>
      <td><button type="button"></button></td>`;
    row.querySelector(".muted").textContent = `(${item.sku})`;
    row.querySelector("label").textContent = `Quantity of ${item.name}`;
    const button = row.querySelector("button");
    button.textContent = "Add to cart";
    button.setAttribute("aria-label", `Add ${item.name} to cart`);
    button.addEventListener("click", () => {
      const current = this.#items.get(item.sku);
      const quantity = Number(row.querySelector("input").value);
      this.dispatchEvent(new CustomEvent("waybill:add-to-cart", {
        bubbles: true, composed: true,
        detail: { sku: current.sku, name: current.name, price: current.price, quantity },
      }));
    });
    return row;
  }
}

customElements.define("waybill-catalog", WaybillCatalog);
