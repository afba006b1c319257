// The orders micro-frontend's HTTP helper: same-origin JSON with the CSRF token, and API
// refusals turned into sentences a customer can read (never swallowed).

export class ApiError extends Error {
  constructor(message, { status, fields = {}, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.fields = fields; // {field: [reasons]} from a 400
    this.retryAfter = retryAfter; // seconds, from a 429
  }
}

const csrf = () =>
  document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";

// DRF nests field errors ({"lines": [{"quantity": ["..."]}, {}]}): flatten to "lines 1 quantity: ...".
function reasons(body, path = []) {
  if (typeof body === "string") return [`${path.length ? path.join(" ") + ": " : ""}${body}`];
  if (Array.isArray(body)) {
    if (body.every((item) => typeof item === "string")) return reasons(body.join(" "), path);
    return body.flatMap((item, i) => reasons(item, [...path, String(i + 1)]));
  }
  if (body && typeof body === "object") {
    return Object.entries(body).flatMap(([key, value]) =>
      reasons(value, key === "detail" || key === "non_field_errors" ? path : [...path, key]));
  }
  return [];
}

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrf(), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("The shop cannot be reached right now. Check your connection and try again.", { status: 0 });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.ok) return data;
  if (response.status === 429) {
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(
      `Too many requests. Please try again${retryAfter ? ` in ${retryAfter} seconds` : " later"}.`,
      { status: 429, retryAfter });
  }
  const text = reasons(data).join(" ") || `The request failed (HTTP ${response.status}).`;
  throw new ApiError(text, { status: response.status, fields: data && typeof data === "object" ? data : {} });
}

// An amount with two places and, when known, its ISO 4217 currency ("9.00 EUR").
export function money(value, currency) {
  const amount = Number(value).toFixed(2);
  return currency ? `${amount} ${currency}` : amount;
}
