// Live bastion sessions (GET /sessions): admins see all and may watch or terminate them;
// the owner (or an admin) may share a session with another user, who may then watch it, and
// with "may type" also type into it; each share can be taken back, or only its typing.

import { api, session } from "../api.js";
import { h, notice, replace, table, when } from "../dom.js";

export function sessions({ view }) {
  const status = h("div", { "aria-live": "polite" });
  const body = h("div", {}, notice("info", "Loading…"));
  const refresh = h("button", { onclick: () => load() }, "Refresh");
  const heading = h("div", { class: "heading" }, h("h1", {}, "Live sessions"), refresh);
  replace(view, heading, status, body);

  const me = session.user?.username;
  const admin = session.has("admin");

  async function act(label, promise) {
    try {
      await promise;
      replace(status, notice("ok", label));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
    load();
  }

  function actions(s) {
    const cells = [];
    if (admin || s.shared_with.includes(me)) {
      const typist = s.typists.includes(me);
      const href = `#/watch/${encodeURIComponent(s.session_id)}${typist ? "?type=1" : ""}`;
      cells.push(h("a", { class: "button", href }, typist ? "Watch and type" : "Watch"));
    }
    if (admin) {
      const terminate = () => {
        if (!confirm(`Terminate ${s.user}'s session ${s.session_id} on ${s.cluster}?`)) return;
        const path = `/sessions/${encodeURIComponent(s.session_id)}/terminate`;
        act(`Session ${s.session_id} terminated.`, api(path, { method: "POST" }));
      };
      cells.push(h("button", { class: "danger", onclick: terminate }, "Terminate"));
    }
    if (admin || s.user === me) {
      const user = h("input", {
        placeholder: "username",
        "aria-label": "Share with",
        maxlength: 64,
        size: 12,
      });
      const typing = h("input", { type: "checkbox", name: "typing" });
      const share = (event) => {
        event.preventDefault();
        const who = user.value.trim();
        if (!who) return;
        const path = `/sessions/${encodeURIComponent(s.session_id)}/share`;
        const body = { user: who, typing: typing.checked };
        const label = typing.checked ? `Shared with ${who}, who may type.` : `Shared with ${who}.`;
        act(label, api(path, { method: "POST", body }));
      };
      const submit = h("button", { type: "submit" }, "Share");
      const mayType = h("label", {}, typing, " may type");
      cells.push(h("form", { class: "inline share", onsubmit: share }, user, mayType, submit));
    }
    return h("span", { class: "actions" }, cells);
  }

  /** Who the session is shared with, each with the owner's (or an admin's) take-back buttons. */
  function sharedWith(s) {
    if (s.shared_with.length === 0) return "—";
    const mine = admin || s.user === me;
    const base = `/sessions/${encodeURIComponent(s.session_id)}/share`;
    return s.shared_with.map((who) => {
      const typist = s.typists.includes(who);
      const note = typist ? " (may type)" : "";
      const item = h("span", { class: "share", "data-user": who }, who, note);
      if (mine && typist) {
        const stop = () =>
          act(
            `${who} may no longer type.`,
            api(`${base}/${encodeURIComponent(who)}/typing`, { method: "DELETE" }),
          );
        item.append(" ", h("button", { class: "stop-typing", onclick: stop }, "Stop typing"));
      }
      if (mine) {
        const unshare = () =>
          act(
            `No longer shared with ${who}.`,
            api(`${base}/${encodeURIComponent(who)}`, { method: "DELETE" }),
          );
        item.append(" ", h("button", { class: "unshare", onclick: unshare }, "Unshare"));
      }
      return h("div", {}, item);
    });
  }

  async function load() {
    try {
      const list = await api("/sessions");
      if (list.length === 0) {
        replace(body, notice("info", "No live sessions."));
        return;
      }
      const rows = list.map((s) =>
        h(
          "tr",
          {},
          h("td", {}, h("code", {}, s.session_id)),
          h("td", {}, s.user),
          h("td", {}, `${s.cluster} / ${s.namespace}`),
          h("td", {}, `${s.channel}${s.source ? ` from ${s.source}` : ""}`),
          h("td", {}, when(s.started_at)),
          h("td", { class: "num" }, s.commands),
          h("td", {}, sharedWith(s)),
          h("td", {}, actions(s)),
        ),
      );
      const headings = [
        "Session",
        "User",
        "Cluster / namespace",
        "Channel",
        "Started",
        "Commands",
        "Shared with",
        "",
      ];
      replace(body, table(headings, rows));
    } catch (e) {
      replace(body, notice("error", e.message));
    }
  }

  load();
}
