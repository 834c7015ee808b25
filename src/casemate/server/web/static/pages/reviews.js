// Held commands awaiting review (GET /reviews?state=pending). Approvers see everyone's and may
// approve or deny (not their own: four eyes); others see their own and may withdraw them.
// The preview (what the command would change) is fetched per ticket on request.

import { api, session } from "../api.js";
import { h, notice, replace, when } from "../dom.js";

function previewText(preview) {
  if (preview === null || preview === undefined) return "(no preview)";
  return typeof preview === "string" ? preview : JSON.stringify(preview, null, 2);
}

export function reviews({ view }) {
  const status = h("div", { "aria-live": "polite" });
  const body = h("div", {}, notice("info", "Loading…"));
  const refresh = h("button", { onclick: () => load() }, "Refresh");
  const heading = h("div", { class: "heading" }, h("h1", {}, "Pending reviews"), refresh);
  replace(view, heading, status, body);

  const me = session.user?.username;
  const approver = session.has("approver");

  async function decide(ticket, verb, payload) {
    try {
      const t = await api(`/reviews/${ticket.id}/${verb}`, { method: "POST", body: payload });
      replace(status, notice("ok", `Ticket #${t.id} is now ${t.state}.`));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
    load();
  }

  function card(t) {
    const preview = h("pre", { class: "preview", hidden: true });
    const showPreview = async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const full = await api(`/reviews/${t.id}`);
        replace(preview, previewText(full.preview));
      } catch (e) {
        replace(preview, `could not load the preview: ${e.message}`);
      }
      preview.hidden = false;
    };
    const note = h("input", {
      placeholder: "note or reason (optional)",
      maxlength: 1000,
      "aria-label": "Note",
    });
    const approve = () => decide(t, "approve", { note: note.value });
    const deny = () => decide(t, "deny", { reason: note.value });
    const buttons = [];
    if (t.has_preview) buttons.push(h("button", { onclick: showPreview }, "Show preview"));
    if (approver && t.user !== me) {
      buttons.push(
        note,
        h("button", { class: "ok", onclick: approve }, "Approve"),
        h("button", { class: "danger", onclick: deny }, "Deny"),
      );
    }
    if (t.user === me) {
      buttons.push(h("button", { onclick: () => decide(t, "cancel") }, "Withdraw"));
    }
    return h(
      "article",
      { class: "ticket" },
      h(
        "header",
        {},
        h("strong", {}, `#${t.id}`),
        ` ${t.user} on ${t.cluster} / ${t.namespace} (account ${t.account})`,
      ),
      h("pre", { class: "command" }, t.command),
      h(
        "dl",
        {},
        h("dt", {}, "Rule"),
        h("dd", {}, `${t.rule_id}: ${t.reason}`),
        h("dt", {}, "Held"),
        h("dd", {}, `${when(t.created_at)}, expires ${when(t.expires_at)}`),
      ),
      t.message ? h("p", { class: "muted" }, t.message) : null,
      h("div", { class: "actions" }, buttons),
      preview,
    );
  }

  async function load() {
    try {
      const tickets = await api("/reviews?state=pending");
      const empty = notice("info", "Nothing is waiting for review.");
      replace(body, tickets.length ? tickets.map(card) : empty);
    } catch (e) {
      replace(body, notice("error", e.message));
    }
  }

  load();
}
