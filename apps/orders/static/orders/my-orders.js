// <waybill-my-orders>: the signed-in customer's orders, live (the `orders` stream), each
// with a link to its tracker and, while it may still be cancelled, a Cancel button.
import { follow, keepNewer, renderList } from "../frontend/helpers.js";
import { api, money } from "./api.js";

const CANCELLABLE = new Set(["PENDING", "CONFIRMED"]);

class WaybillMyOrders extends HTMLElement {
  #orders = new Map(); // id -> order document

  connectedCallback() {
    this.innerHTML = `
      <section aria-labelledby="my-orders-title">
        <h2 id="my-orders-title">My orders</h2>
        <div class="message" role="alert"></div>
        <p class="message" role="status" aria-live="polite"></p>
        <ul class="list" data-role="orders"></ul>
      </section>`;
    follow("orders", (documents, { snapshot }) => {
      for (const order of documents) {
        const before = this.#orders.get(order.id)?.status;
        keepNewer(this.#orders, order.id, order);
        const after = this.#orders.get(order.id).status;
        // Announce a live status change, not the whole list (a screen reader would read it all).
        if (!snapshot && before && before !== after) {
          this.querySelector("[role=status]").textContent = `An order is now ${after}.`;
        }
      }
      this.#render();
    });
  }

  async #cancel(order) {
    const alert = this.querySelector("[role=alert]");
    alert.textContent = "";
    try {
      await api(`/api/v1/orders/${order.id}/cancel/`, { method: "POST" });
      this.querySelector("[role=status]").textContent = "Cancellation accepted; the order updates in a moment.";
    } catch (error) {
      alert.innerHTML = `<p class="error"></p>`;
      alert.firstChild.textContent = `Could not cancel: ${error.message}`;
    }
  }

  #render() {
    const list = this.querySelector("[data-role=orders]");
    const orders = [...this.#orders.values()].sort((a, b) =>
      (b.placed_at ?? b.updated_at).localeCompare(a.placed_at ?? a.updated_at));
    const items = orders.map((order) => {
      const li = document.createElement("li");
      li.dataset.orderId = order.id;
      li.innerHTML = `<span class="status"></span><span data-role="lines"></span><span class="muted" data-role="reason"></span>
        <a data-role="track"></a>`;
      const status = li.querySelector(".status");
      status.textContent = order.status;
      status.classList.add(`status-${order.status}`);
      const lines = (order.lines ?? []).map((l) => `${l.quantity} × ${l.name ?? l.sku}`).join(", ");
      li.querySelector("[data-role=lines]").textContent = `${lines} — total ${money(order.total, order.currency)}`;
      li.querySelector("[data-role=reason]").textContent = order.reason ?? "";
      const track = li.querySelector("[data-role=track]");
      track.href = `/track/${order.id}/`;
      track.textContent = "Track";
      track.setAttribute("aria-label", `Track order placed ${new Date(order.placed_at ?? order.updated_at).toLocaleString()}`);
      if (CANCELLABLE.has(order.status)) {
        const cancel = document.createElement("button");
        cancel.type = "button";
        cancel.textContent = "Cancel";
        cancel.setAttribute("aria-label", `Cancel order ${order.id}`);
        cancel.addEventListener("click", () => this.#cancel(order));
        li.append(cancel);
      }
      return li;
    });
    renderList(list, items, "No orders yet.");
  }
}

customElements.define("waybill-my-orders", WaybillMyOrders);
