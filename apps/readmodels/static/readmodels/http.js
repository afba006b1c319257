// The read side's micro-frontend HTTP helper: same-origin JSON reads, refusals as sentences.
// Following a stream is the shell's (frontend/helpers.js).

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
