// The first shop page: catalog, cart, checkout and "my orders", talking to the API only.
// Placing an order answers 202; the outcome is pushed over the WebSocket /ws/v1/orders/.
// Each pushed change carries its read-model version, so an older change never overwrites
// a newer one, and every (re)connect re-reads the snapshots to catch up on what it missed.

const csrf = () => document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";
const message = document.getElementById("message");
const catalog = new Map(); // sku -> item
const orders = new Map(); // id -> summary

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

function keepNewer(map, key, item) {
  const known = map.get(key);
  if (!known || known.version < item.version) map.set(key, item);
}

function renderCatalog() {
  const body = document.getElementById("catalog");
  const quantities = new Map([...body.querySelectorAll("input")].map((i) => [i.dataset.sku, i.value]));
  const rows = [...catalog.values()].sort((a, b) => a.sku.localeCompare(b.sku)).map((item) => {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td></td><td class="available"></td><td><input type="number" min="0" max="100"></td>`;
    tr.dataset.sku = item.sku;
    tr.children[0].textContent = `${item.name} (${item.sku})`;
    tr.children[1].textContent = item.price;
    tr.children[2].textContent = item.available;
    const input = tr.querySelector("input");
    input.dataset.sku = item.sku;
    input.value = quantities.get(item.sku) ?? "0";
    input.setAttribute("aria-label", `Quantity of ${item.name}`);
    return tr;
  });
  body.replaceChildren(...rows);
}

function renderOrders() {
  const items = [...orders.values()].sort((a, b) => b.updated_at.localeCompare(a.updated_at)).map((order) => {
    const li = document.createElement("li");
    li.dataset.orderId = order.id;
    li.innerHTML = `<span class="status"></span> <span class="lines"></span> <span class="reason"></span>`;
    const status = li.querySelector(".status");
    status.textContent = order.status;
    status.classList.add(`status-${order.status}`);
    const lines = order.lines.map((l) => `${l.quantity} x ${l.name}`).join(", ");
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
}

async function catchUp() {
  const [items, summaries] = await Promise.all([api("/api/v1/read/catalog/"), api("/api/v1/read/orders/")]);
  items.forEach((item) => keepNewer(catalog, item.sku, item));
  summaries.forEach((summary) => keepNewer(orders, summary.id, summary));
  renderCatalog();
  renderOrders();
}

let retryDelay = 500;
function connectLive() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/v1/orders/`);
  socket.addEventListener("open", () => {
    retryDelay = 500;
    document.body.dataset.live = "connected";
    catchUp().catch((error) => show(error.message, true));
  });
  socket.addEventListener("message", (event) => {
    const change = JSON.parse(event.data);
    if (change.type === "order") {
      keepNewer(orders, change.data.id, change.data);
      renderOrders();
    } else if (change.type === "catalog") {
      keepNewer(catalog, change.data.sku, change.data);
      renderCatalog();
    }
  });
  socket.addEventListener("close", () => {
    document.body.dataset.live = "reconnecting";
    setTimeout(connectLive, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  });
}

async function cancelOrder(id) {
  try {
    await api(`/api/v1/orders/${id}/cancel/`, { method: "POST" });
    show("Cancellation accepted.");
  } catch (error) {
    show(error.message, true);
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
    event.target.querySelectorAll("input").forEach((input) => (input.value = "0"));
  } catch (error) {
    show(error.message, true);
  }
});

connectLive();
