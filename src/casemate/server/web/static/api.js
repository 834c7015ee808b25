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
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function detail(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch {
    // not JSON
  }
  return `${response.status} ${response.statusText}`.trim();
}

/**
 * Call the API: api("/sessions"), api("/auth/login", { method: "POST", body: {...} }).
 * Returns the decoded JSON (null for 204), or the Response itself with { raw: true }.
 * Throws ApiError with the problem's detail; a 401 on a logged-in call ends the login.
 */
export async function api(path, { method = "GET", body, raw = false } = {}) {
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
  if (response.status === 401 && token) {
    session.clear();
    window.dispatchEvent(new CustomEvent("casemate:logged-out"));
  }
  if (!response.ok) throw new ApiError(response.status, await detail(response));
  if (raw) return response;
  return response.status === 204 ? null : response.json();
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
