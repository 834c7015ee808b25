// The user's own grants (GET /grants/mine): what they may connect to, with a Connect button
// that opens the terminal page on the chosen namespace.

import { api } from "../api.js";
import { h, notice, replace, table, when } from "../dom.js";

function connectCell(grant) {
  if (grant.state !== "active") return h("span", { class: "muted" }, grant.state);
  const select = h(
    "select",
    { "aria-label": `Namespace on ${grant.cluster}` },
    grant.namespaces.map((ns) => h("option", { value: ns }, ns)),
  );
  const connect = () => {
    const query = new URLSearchParams({ ns: select.value });
    location.hash = `#/terminal/${encodeURIComponent(grant.cluster)}?${query}`;
  };
  return h("span", { class: "actions" }, select, h("button", { onclick: connect }, "Connect"));
}

export function clusters({ view }) {
  const body = h("div", {}, notice("info", "Loading…"));
  replace(view, h("h1", {}, "Clusters"), body);

  api("/grants/mine")
    .then((grants) => {
      if (grants.length === 0) {
        replace(body, notice("info", "You have no grants. Ask an administrator for access."));
        return;
      }
      const rows = grants.map((g) =>
        h(
          "tr",
          {},
          h("td", {}, g.cluster),
          h("td", {}, g.account),
          h("td", {}, g.namespaces.join(", ")),
          h("td", {}, g.expires_at ? when(g.expires_at) : "never"),
          h("td", {}, g.note),
          h("td", {}, connectCell(g)),
        ),
      );
      replace(body, table(["Cluster", "Account", "Namespaces", "Expires", "Note", ""], rows));
    })
    .catch((e) => replace(body, notice("error", e.message)));
}
