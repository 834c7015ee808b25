// The single page: hash routes (#/clusters, #/terminal/<cluster>?ns=...), one module per page,
// loaded when first visited. A page module's function takes a context and may return a
// cleanup function, which runs when the route changes (closing websockets and timers).

import { api, events, session } from "./api.js";
import { notice, replace } from "./dom.js";

const ROUTES = {
  login: { load: () => import("./pages/login.js"), page: "login", public: true },
  clusters: { load: () => import("./pages/clusters.js"), page: "clusters" },
  assets: { load: () => import("./pages/assets.js"), page: "assets" },
  vulnerabilities: { load: () => import("./pages/vulnerabilities.js"), page: "vulnerabilities" },
  terminal: { load: () => import("./pages/terminal.js"), page: "terminal", full: true },
  sessions: { load: () => import("./pages/sessions.js"), page: "sessions" },
  watch: { load: () => import("./pages/terminal.js"), page: "watch", full: true },
  reviews: { load: () => import("./pages/reviews.js"), page: "reviews" },
  recordings: { load: () => import("./pages/recordings.js"), page: "recordings" },
  play: { load: () => import("./pages/recordings.js"), page: "play", nav: "recordings" },
  users: { load: () => import("./pages/users.js"), page: "users" },
  manage: { load: () => import("./pages/manage.js"), page: "manage" },
  policy: { load: () => import("./pages/policy.js"), page: "policy" },
  audit: { load: () => import("./pages/audit.js"), page: "audit" },
  posture: { load: () => import("./pages/posture.js"), page: "posture" },
  me: { load: () => import("./pages/me.js"), page: "me" },
};

const main = document.getElementById("main");
const top = document.getElementById("top");
let cleanup = null;
let generation = 0;
let pendingNotice = null;

/** "#/terminal/prod?ns=web" -> { name: "terminal", args: ["prod"], query: URLSearchParams } */
function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { name: parts[0] || "clusters", args: parts.slice(1), query: new URLSearchParams(query) };
}

export function go(hash, message) {
  pendingNotice = message ?? null;
  if (location.hash === hash) render();
  else location.hash = hash;
}

function showHeader(route, name) {
  const user = session.user;
  top.hidden = !user || route.full;
  document.body.classList.toggle("fullscreen", Boolean(route.full));
  const roles = user?.roles.join(", ") || "no roles";
  replace(document.getElementById("whoami"), user ? `${user.username} (${roles})` : "");
  for (const link of top.querySelectorAll("nav a, #whoami")) {
    link.classList.toggle("current", link.dataset.route === (route.nav ?? name));
    // Links to pages this user cannot use are hidden; the server refuses them anyway.
    if (link.dataset.needs) link.hidden = !session.has(link.dataset.needs);
  }
  watchReviews();
}

// The pending-review count in the navigation bar, live from GET /reviews/events.
let stopReviews = null;
function watchReviews() {
  const badge = document.getElementById("review-count");
  if (!session.token) {
    stopReviews?.();
    stopReviews = null;
    badge.hidden = true;
    return;
  }
  if (stopReviews) return;
  stopReviews = events("/reviews/events", (name, data) => {
    if (name !== "count" || typeof data.pending !== "number") return;
    replace(badge, String(data.pending));
    badge.hidden = data.pending === 0;
    badge.title = `${data.pending} waiting for review`;
  });
}

async function render() {
  const mine = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  let { name, args, query } = parseHash();
  let route = ROUTES[name];
  if (!route) {
    pendingNotice = `There is no page "${name}".`;
    name = "clusters";
    route = ROUTES.clusters;
  }
  if (!route.public && !session.token) {
    const asked = location.hash.replace(/^#\/?/, "");
    if (name !== "login" && asked) pendingNotice = pendingNotice ?? "Log in first.";
    name = "login";
    route = ROUTES.login;
    args = [];
  }
  showHeader(route, name);
  const view = document.createElement("section");
  view.className = `page page-${name}`;
  const message = pendingNotice;
  pendingNotice = null;
  replace(main, message ? notice("info", message) : null, view);
  try {
    const module = await route.load();
    if (mine !== generation) return; // the route changed while loading
    cleanup = module[route.page]({ view, args, query, go }) ?? null;
  } catch (e) {
    if (mine === generation) replace(view, notice("error", `This page failed: ${e.message}`));
  }
}

async function start() {
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("/auth/logout", { method: "POST" });
    } catch {
      // ended already
    }
    session.clear();
    stopReviews?.();
    stopReviews = null;
    go("#/login", "Logged out.");
  });
  window.addEventListener("casemate:logged-out", () =>
    go("#/login", "Your login ended; log in again."),
  );
  window.addEventListener("hashchange", render);
  if (session.token) {
    try {
      session.setUser(await api("/auth/me"));
    } catch {
      // a 401 cleared the session already; other errors show on the page
    }
  }
  render();
}

start();
