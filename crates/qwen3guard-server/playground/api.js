// The server's API as the page uses it: JSON calls, the proxy's event stream, the key,
// and the server's error body turned into a sentence a person can act on.

let key = "";

/** Sets the bearer key sent with every call ("" sends none). */
export function setKey(value) {
  key = value.trim();
}

/** An answer that was not a success, with the server's own code and message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** What went wrong and what to do about it. */
  describe() {
    const said = this.message ? `: ${this.message}` : "";
    switch (this.status) {
      case 0:
        return `Cannot reach the server${said}`;
      case 401:
        return `The server needs an API key (type it in the API key field above)${said}`;
      case 413:
        return `Too long for this server's limits${said}`;
      case 429:
        return `Too many open sessions; wait for some to close${said}`;
      case 503: {
        const wait = this.retryAfter ? ` Retry in ${this.retryAfter} s.` : "";
        return `The server is busy or not ready (${this.code || "unavailable"})${said}.${wait}`;
      }
      default:
        return `Error ${this.status}${this.code ? ` (${this.code})` : ""}${said}`;
    }
  }
}

function headers(json) {
  const h = {};
  if (json) h["content-type"] = "application/json";
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

async function send(method, path, body) {
  try {
    return await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "network", String(e.message || e));
  }
}

async function failure(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch (_) {
    // Not the server's error shape (a proxy in between, say): the status says enough.
  }
  return new ApiError(
    response.status,
    error.code || error.type || "",
    error.message || response.statusText,
    response.headers.get("retry-after"),
  );
}

/** Calls `method path` with a JSON body (or none); the parsed answer, or null for 204. */
export async function call(method, path, body) {
  const response = await send(method, path, body);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * POSTs `body` to `path` and hands each server-sent event's data to `onData` (parsed
 * JSON, or the string "[DONE]") as it arrives.
 */
export async function events(path, body, onData) {
  const response = await send("POST", path, body);
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) onData(data === "[DONE]" ? data : JSON.parse(data));
    }
  }
}
