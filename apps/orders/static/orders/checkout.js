// <waybill-checkout>: places the cart's lines as an order. It learns the lines from
// `waybill:cart-changed` and announces success with `waybill:order-placed` {order}. The
// API answers 202 at once (the outcome arrives live); its refusals are shown as they are:
// field reasons on 400, the wait on 429.
import { ApiError, api } from "./api.js";

class WaybillCheckout extends HTMLElement {
  #lines = [];
  #key = null; // one Idempotency-Key per attempt at this cart: a retry cannot order twice

  connectedCallback() {
    this.innerHTML = `
      <section aria-labelledby="checkout-title">
        <h2 id="checkout-title">Checkout</h2>
        <form novalidate>
          <button type="submit" class="primary" disabled>Place order</button>
        </form>
        <div class="message" role="alert" aria-live="assertive"></div>
        <p class="message" role="status" aria-live="polite"></p>
      </section>`;
    this.querySelector("form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.#place();
    });
    document.addEventListener("waybill:cart-changed", (e) => {
      const changed = JSON.stringify(e.detail.lines) !== JSON.stringify(this.#lines);
      this.#lines = e.detail.lines;
      if (changed) this.#key = null;
      this.querySelector("button").disabled = this.#lines.length === 0;
    });
    document.dispatchEvent(new CustomEvent("waybill:cart-requested"));
  }

  async #place() {
    const button = this.querySelector("button");
    const alert = this.querySelector("[role=alert]");
    const status = this.querySelector("[role=status]");
    alert.textContent = "";
    status.textContent = "Placing your order…";
    button.disabled = true;
    this.#key ??= crypto.randomUUID();
    try {
      const order = await api("/api/v1/orders/", {
        method: "POST",
        headers: { "Idempotency-Key": this.#key },
        body: { lines: this.#lines.map(({ sku, quantity }) => ({ sku, quantity })) },
      });
      this.#key = null;
      status.textContent = "Order placed. Its progress shows in the order tracker.";
      this.dispatchEvent(new CustomEvent("waybill:order-placed", { bubbles: true, composed: true, detail: { order } }));
    } catch (error) {
      status.textContent = "";
      alert.innerHTML = "";
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = error instanceof ApiError ? error.message : String(error);
      alert.append(p);
      if (error.status === 429 && error.retryAfter) {
        // Let the customer retry once the server says it will listen again.
        setTimeout(() => (button.disabled = this.#lines.length === 0), error.retryAfter * 1000);
        return;
      }
    }
    button.disabled = this.#lines.length === 0;
  }
}

customElements.define("waybill-checkout", WaybillCheckout);
