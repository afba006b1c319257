// The first shop page: catalog, cart, checkout and "my orders", talking to the API only.
// Outcomes arrive asynchronously (the API answers 202), so open orders are re-read
// until they settle; the live micro-frontends replace this with pushed updates.

const csrf = () => document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";
const message = document.getElementById("message");

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(), ...(options.headers ?? {}) },
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error(describeError(response.status, body));
  return body;
}

function describeError(status, body) {
  if (body?.detail) return body.detail;
  if (body && typeof body === "object") return JSON.stringify(body);
  return `Request failed (${status})`;
}

function show(text, isError = false) {
  message.textContent = text;
  message.className = isError ? "error" : "";
}

async function loadCatalog() {
  const items = await api("/api/v1/read/catalog/");
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td></td><td></td><td><input type="number" min="0" max="100" value="0"></td>`;
    tr.children[0].textContent = `${item.name} (${item.sku})`;
    tr.children[1].textContent = item.price;
    tr.children[2].textContent = item.available;
    const input = tr.querySelector("input");
    input.dataset.sku = item.sku;
    input.setAttribute("aria-label", `Quantity of ${item.name}`);
    return tr;
  });
  document.getElementById("catalog").replaceChildren(...rows);
}

async function loadOrders() {
  const orders = await api("/api/v1/read/orders/");
  const items = orders.map((order) => {
    const li = document.createElement("li");
    li.dataset.orderId = order.id;
    const lines = order.lines.map((l) => `${l.quantity} x ${l.name}`).join(", ");
    li.innerHTML = `<span class="status"></span> <span class="lines"></span> <span class="reason"></span>`;
    li.querySelector(".status").textContent = order.status;
    li.querySelector(".status").classList.add(`status-${order.status}`);
    li.querySelector(".lines").textContent = `${lines} - total ${order.total}`;
    li.querySelector(".reason").textContent = order.status === "REJECTED" ? order.reason : "";
    if (order.status === "PENDING" || order.status === "CONFIRMED") {
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.textContent = "Cancel";
      cancel.setAttribute("aria-label", `Cancel order ${order.id}`);
      cancel.addEventListener("click", () => cancelOrder(order.id));
      li.append(" ", cancel);
    }
    return li;
  });
  document.getElementById("orders").replaceChildren(...items);
  return orders;
}

async function cancelOrder(id) {
  try {
    await api(`/api/v1/orders/${id}/cancel/`, { method: "POST" });
    show("Cancellation accepted.");
    await watch();
  } catch (error) {
    show(error.message, true);
  }
}

let watching = null;
async function watch() {
  // Re-read while any order is still on its way to a final status.
  clearTimeout(watching);
  const orders = await loadOrders();
  await loadCatalog();
  if (orders.some((o) => o.status === "PENDING") || orders.length === 0) {
    watching = setTimeout(() => watch().catch((e) => show(e.message, true)), 500);
  }
}

document.getElementById("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const lines = [...document.querySelectorAll("#catalog input")]
    .filter((input) => Number(input.value) > 0)
    .map((input) => ({ sku: input.dataset.sku, quantity: Number(input.value) }));
  try {
    const order = await api("/api/v1/orders/", {
      method: "POST",
      body: JSON.stringify({ lines }),
      headers: { "Idempotency-Key": crypto.randomUUID() },
    });
    show(`Order placed (${order.status}); waiting for stock...`);
    event.target.reset();
    await watch();
  } catch (error) {
    show(error.message, true);
  }
});

watch().catch((error) => show(error.message, true));
