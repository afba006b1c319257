// The read side's micro-frontend helpers: same-origin JSON reads, refusals as sentences,
// and following a stream of the shell's realtime connection through DOM events.

export class HttpError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function getJson(path) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  } catch {
    throw new HttpError("The server cannot be reached right now.", 0);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(body?.detail ?? `The request failed (HTTP ${response.status}).`, response.status);
  return body;
}

export function keepNewer(map, key, document) {
  const known = map.get(key);
  if (!known || known.version <= document.version) map.set(key, document);
}

// Follow `stream`: `onDocuments(documents)` for a snapshot's documents and each change's
// document, `onRefused(reason)` if the server refuses it. Returns a function that stops.
export function follow(stream, onDocuments, onRefused = () => {}) {
  const onSnapshot = (e) => e.detail.stream === stream && onDocuments(e.detail.documents);
  const onChange = (e) => e.detail.stream === stream && e.detail.data && onDocuments([e.detail.data]);
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
