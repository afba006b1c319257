// <waybill-cart>: what the customer means to order. Listens for `waybill:add-to-cart`,
// empties itself on `waybill:order-placed`, and offers its lines to the checkout through
// `waybill:cart-changed` {lines: [{sku, name, price, quantity}]}. Kept in sessionStorage so
// a reload does not lose it.
import { renderList } from "../frontend/helpers.js";
import { money } from "./api.js";

const STORAGE_KEY = "waybill.cart";
const MAX_QUANTITY = 100;

class WaybillCart extends HTMLElement {
  #lines = new Map(); // sku -> {sku, name, price, quantity}

  connectedCallback() {
    try {
      for (const line of JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "[]")) this.#lines.set(line.sku, line);
    } catch { /* a damaged cart starts empty */ }
    this.innerHTML = `
      <section aria-labelledby="cart-title">
        <h2 id="cart-title">Cart</h2>
        <p class="message" role="status" aria-live="polite"></p>
        <ul class="list" data-role="lines"></ul>
        <p><strong>Total: <span data-role="total">0.00</span></strong></p>
      </section>`;
    document.addEventListener("waybill:add-to-cart", (e) => this.#add(e.detail));
    document.addEventListener("waybill:order-placed", () => {
      this.#clear();
      this.#say("Your order is placed; the cart is empty again.");
    });
    // The checkout may load after us: tell it what we hold when it asks.
    document.addEventListener("waybill:cart-requested", () => this.#announce());
    this.#render();
  }

  #add({ sku, name, price, quantity }) {
    if (!Number.isInteger(quantity) || quantity < 1) {
      this.#say(`Choose a quantity of at least 1 for ${name}.`);
      return;
    }
    const line = this.#lines.get(sku) ?? { sku, name, price, quantity: 0 };
    line.quantity = Math.min(MAX_QUANTITY, line.quantity + quantity);
    this.#lines.set(sku, { ...line, name, price });
    this.#say(`${name}: ${line.quantity} in the cart.`);
    this.#render();
  }

  #remove(sku) {
    const line = this.#lines.get(sku);
    this.#lines.delete(sku);
    this.#say(`${line?.name ?? sku} removed from the cart.`);
    this.#render();
  }

  #clear() {
    this.#lines.clear();
    this.#render();
  }

  #say(text) {
    this.querySelector("[role=status]").textContent = text;
  }

  #announce() {
    this.dispatchEvent(new CustomEvent("waybill:cart-changed", {
      bubbles: true, composed: true, detail: { lines: [...this.#lines.values()] },
    }));
  }

  #render() {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify([...this.#lines.values()]));
    const list = this.querySelector("[data-role=lines]");
    const items = [...this.#lines.values()].map((line) => {
      const li = document.createElement("li");
      li.dataset.sku = line.sku;
      li.innerHTML = `<span></span><span class="muted"></span><button type="button">Remove</button>`;
      li.children[0].textContent = `${line.quantity} × ${line.name}`;
      li.children[1].textContent = money(Number(line.price) * line.quantity);
      li.querySelector("button").setAttribute("aria-label", `Remove ${line.name} from the cart`);
      li.querySelector("button").addEventListener("click", () => this.#remove(line.sku));
      return li;
    });
    renderList(list, items, "Your cart is empty.");
    const total = [...this.#lines.values()].reduce((sum, l) => sum + Number(l.price) * l.quantity, 0);
    this.querySelector("[data-role=total]").textContent = money(total);
    this.#announce();
  }
}

customElements.define("waybill-cart", WaybillCart);
