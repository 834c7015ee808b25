// Talking to the Casemate API. The login token lives in sessionStorage only (this tab, until
// it closes): never in localStorage, a cookie set by this code, or a URL. Requests send it as
// a Bearer header; websockets send it as their first message.

const TOKEN_KEY = "casemate.token";
const USER_KEY = "casemate.user";
export const API = "/api/v1";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  save(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  setUser(user) {
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
  /** Whether the user holds ``role`` (admins hold every role). */
  has(role) {
    const roles = this.user?.roles ?? [];
    return roles.includes(role) || roles.includes("admin");
  },
};

export class ApiError extends Error {
  constructor(status, message, problem = null) {
    super(message);
    this.status = status;
    this.problem = problem; // the JSON problem body (e.g. its "line" for a policy error)
  }
}

async function failure(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // not JSON
  }
  const text =
    problem && typeof problem.detail === "string"
      ? problem.detail
      : `${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, text, problem);
}

/**
 * Call the API: api("/sessions"), api("/auth/login", { method: "POST", body: {...} }).
 * Returns the decoded JSON (null for 204), or the Response itself with { raw: true }.
 * Throws ApiError with the problem's detail; a 401 on a logged-in call ends the login, except
 * with { checksPassword: true }: there a 401 means the password typed into the form was wrong
 * (changing one's password with the old one), not that the login ended.
 */
export async function api(path, { method = "GET", body, raw = false, checksPassword = false } = {}) {
  const headers = { Accept: "application/json" };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "same-origin",
    redirect: "error",
  });
  if (response.status === 401 && token && !checksPassword) {
    session.clear();
    window.dispatchEvent(new CustomEvent("casemate:logged-out"));
  }
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

/**
 * Follow a server-sent event stream with the Bearer header (EventSource cannot send one):
 * calls onEvent(name, data) per event; reconnects after errors until stop() is called.
 */
export function events(path, onEvent) {
  let stopped = false;
  let controller = null;
  async function run() {
    while (!stopped && session.token) {
      controller = new AbortController();
      try {
        const response = await fetch(API + path, {
          headers: { Accept: "text/event-stream", Authorization: `Bearer ${session.token}` },
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.status === 401) return;
        if (!response.ok || !response.body) throw new Error(`${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) name = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).trim());
            }
            if (data.length) {
              try {
                onEvent(name, JSON.parse(data.join("\n")));
              } catch {
                // not JSON: ignored
              }
            }
          }
        }
      } catch {
        if (stopped) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  }
  run();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

/**
 * A websocket to an API path that authenticates with its first message. Calls
 * onMessage(obj) for each JSON message and onClose(event) once at the end.
 */
export function socket(path, { onOpen, onMessage, onClose }) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}${API}${path}`);
  ws.addEventListener("open", () => {
    ws.send(JSON.stringify({ type: "auth", token: session.token ?? "" }));
    onOpen?.();
  });
  ws.addEventListener("message", (event) => {
    if (typeof event.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg && typeof msg === "object") onMessage(msg);
  });
  ws.addEventListener("close", (event) => onClose?.(event));
  return {
    send(obj) {
      if (ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(obj));
      return true;
    },
    close() {
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
        ws.close(1000, "closed by the page");
      }
    },
  };
}
