// The shell's one realtime connection, shared by every micro-frontend on the page.
//
// Micro-frontends never open sockets: they ask for a stream with a DOM event
//   document.dispatchEvent(new CustomEvent("waybill:subscribe", {detail: {stream: "catalog"}}))
// (and `waybill:unsubscribe` with the same detail when it no longer needs it)
// and listen on `document` for what comes back:
//   waybill:snapshot   {stream, position, documents}   the whole current state (first, or after a gap)
//   waybill:change     {stream, position, kind, key, version, data}
//   waybill:refused    {stream, reason}
//   waybill:connection {state: "connecting" | "live" | "reconnecting" | "signed-out", retryInMs?}
// Documents carry versions; a micro-frontend keeps the newer of two, so a change seen twice
// (a snapshot racing a push) is harmless. This module knows nothing of orders or stock.
//
// Delivery over Channels is at most once, so the server numbers every change per stream.
// We remember the last position seen per stream; after a reconnect, or when a position
// jumps (a push was lost), we subscribe again with `after` = that position and the server
// sends what we missed (or a fresh snapshot when its log no longer reaches back).

const URL_PATH = "/ws/v1/streams/";
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 8000;
const RESUME_WAIT_MS = 3000; // ask again if a resume has not been answered by then

const streams = new Map(); // name -> {position: number | null, resumingSince: ms}
let socket = null;
let failures = 0; // consecutive connections that closed before opening, for the backoff

function emit(type, detail) {
  document.dispatchEvent(new CustomEvent(`waybill:${type}`, { detail }));
}

function setState(state, extra = {}) {
  document.documentElement.dataset.live = state;
  emit("connection", { state, ...extra });
}

function send(message) {
  if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function subscribe(name) {
  const known = streams.get(name);
  send({ action: "subscribe", stream: name, after: known?.position ?? null });
}

function onMessage(event) {
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch {
    return; // not ours to interpret; the server speaks JSON only
  }
  const state = streams.get(frame.stream);
  if (!state) return;
  if (frame.type === "snapshot") {
    state.position = frame.position;
    state.resumingSince = 0;
    emit("snapshot", { stream: frame.stream, position: frame.position, documents: frame.documents ?? [] });
  } else if (frame.type === "change") {
    if (state.position !== null && frame.position <= state.position) return; // already seen
    // `order:<id>` is a filtered view of the customer's orders stream: its positions rise
    // but skip the other orders' changes, so only an unfiltered stream can show a loss.
    if (state.position !== null && frame.position > state.position + 1 && !frame.stream.includes(":")) {
      // A change was lost on the way: ask for everything after the last one we have
      // (the answer includes this one too, as the server reads its log after it committed).
      if (!(state.resumingSince > Date.now() - RESUME_WAIT_MS)) {
        state.resumingSince = Date.now();
        subscribe(frame.stream);
      }
      return;
    }
    state.resumingSince = 0;
    state.position = frame.position;
    emit("change", { ...frame });
  } else if (frame.type === "refused") {
    streams.delete(frame.stream); // a micro-frontend may ask again later (e.g. an order not yet projected)
    emit("refused", { stream: frame.stream, reason: frame.reason ?? "refused" });
  }
}

function connect() {
  setState(failures ? "reconnecting" : "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = (socket = new WebSocket(`${scheme}://${location.host}${URL_PATH}`));
  let opened = false;
  ws.addEventListener("open", () => {
    opened = true;
    failures = 0;
    setState("live");
    for (const name of streams.keys()) subscribe(name);
  });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    socket = null;
    if (event.code === 4401) {
      // The session ended (signed out in another tab, or expired): retrying cannot help.
      setState("signed-out");
      return;
    }
    if (!opened) failures += 1;
    // Capped exponential backoff with jitter, so a restarted server is not met by every
    // page at the same instant. A connection that had opened retries soon.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** failures);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    if (opened) failures = 1; // the next attempt after a drop is not a first try
    setState("reconnecting", { retryInMs: delay });
    setTimeout(connect, delay);
  });
}

document.addEventListener("waybill:subscribe", (event) => {
  const name = event.detail?.stream;
  if (typeof name !== "string" || !name) return;
  if (!streams.has(name)) {
    streams.set(name, { position: null, resumingSince: 0 });
  } else {
    // Another element wants a stream we already follow: it needs the whole state, so ask
    // for a fresh snapshot (the others just see documents they already have).
    streams.get(name).position = null;
  }
  subscribe(name);
});

document.addEventListener("waybill:unsubscribe", (event) => {
  const name = event.detail?.stream;
  if (streams.delete(name)) send({ action: "unsubscribe", stream: name });
});

// The connection indicator in the shell's header (aria-live, so it is announced).
const indicator = document.getElementById("live-status");
const LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", "signed-out": "Signed out: sign in again" };
document.addEventListener("waybill:connection", (event) => {
  if (!indicator) return;
  const { state, retryInMs } = event.detail;
  indicator.textContent = state === "reconnecting" && retryInMs
    ? `Offline, retrying in ${Math.ceil(retryInMs / 1000)} s`
    : LABELS[state];
  indicator.dataset.state = state;
});

connect();
// Micro-frontends loaded before this module ask again when they hear it is here.
emit("realtime-ready", {});
