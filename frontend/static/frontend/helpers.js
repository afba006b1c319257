// What every micro-frontend shares, owned by the shell: following a stream of the shell's
// realtime connection (realtime.js) through DOM events, keeping the newer version of a
// document, and rendering a live table in place or a list with its empty line.
//
// A micro-frontend imports it by a relative URL, `../frontend/helpers.js` from
// /static/<ctx>/, so it is always /static/frontend/helpers.js: the shell's copy in embedded
// mode and in services mode alike, where the gateway sends /static/<ctx>/ to that context's
// web process and everything else, this module included, to the shell. One URL, so one
// module instance per page.

// Keep the newer of two documents by version: pushes and snapshots may arrive in any order,
// and a repeat is harmless. Returns whether `document` was kept.
export function keepNewer(map, key, document) {
  const known = map.get(key);
  const newer = !known || known.version <= document.version;
  if (newer) map.set(key, document);
  return newer;
}

// Follow `stream`: `onDocuments(documents, {snapshot})` for a snapshot's documents and for
// each change's document, `onRefused(reason)` if the server refuses the stream. The stream is
// asked for now and again whenever the shell's connection announces itself (an element
// loaded before realtime.js). Returns a function that stops following.
export function follow(stream, onDocuments, onRefused = () => {}) {
  const onSnapshot = (e) => e.detail.stream === stream && onDocuments(e.detail.documents, { snapshot: true });
  const onChange = (e) => e.detail.stream === stream && e.detail.data && onDocuments([e.detail.data], { snapshot: false });
  const onRefusal = (e) => e.detail.stream === stream && onRefused(e.detail.reason);
  const ask = () => document.dispatchEvent(new CustomEvent("waybill:subscribe", { detail: { stream } }));
  document.addEventListener("waybill:snapshot", onSnapshot);
  document.addEventListener("waybill:change", onChange);
  document.addEventListener("waybill:refused", onRefusal);
  document.addEventListener("waybill:realtime-ready", ask);
  ask();
  return () => {
    document.removeEventListener("waybill:snapshot", onSnapshot);
    document.removeEventListener("waybill:change", onChange);
    document.removeEventListener("waybill:refused", onRefusal);
    document.removeEventListener("waybill:realtime-ready", ask);
    document.dispatchEvent(new CustomEvent("waybill:unsubscribe", { detail: { stream } }));
  };
}

// Render `items` as the rows of `table`'s body, in their order and in place: each item's row
// (`data-<key>` = item[key]) is made once by `create(item)` and brought up to date by
// `update(row, item)`, so a live change never steals focus or wipes what someone is typing.
// Rows of items no longer there are removed. While there are no items the table is hidden
// and `empty` (a placeholder element, if given) shown.
export function renderTable(table, items, { key, create, update, empty = null }) {
  if (empty) empty.hidden = items.length > 0;
  table.hidden = items.length === 0;
  const body = table.tBodies[0];
  const rows = new Map([...body.rows].map((row) => [row.dataset[key], row]));
  const current = new Set();
  items.forEach((item, index) => {
    let row = rows.get(String(item[key]));
    if (!row) {
      row = create(item);
      row.dataset[key] = item[key];
    }
    current.add(row);
    update(row, item);
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] ?? null);
  });
  for (const row of [...body.rows]) if (!current.has(row)) row.remove();
}

// Replace `list`'s items with `items` (elements), or with one muted `emptyText` line when
// there are none.
export function renderList(list, items, emptyText) {
  if (items.length) {
    list.replaceChildren(...items);
    return;
  }
  const empty = document.createElement("li");
  empty.className = "muted";
  empty.textContent = emptyText;
  list.replaceChildren(empty);
}
