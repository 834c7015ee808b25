// Admin: clusters and their system accounts (import a kubeconfig, provision from a preset,
// rotate, check against the cluster, remove) and grants (add with namespaces and expiry, revoke). Same API as
// `casemate cluster …` and `casemate grant …`; auditors see the lists read-only.

import { api, session } from "../api.js";
import { field, h, notice, replace, table, when, words } from "../dom.js";

const enc = encodeURIComponent;

export function manage({ view }) {
  const admin = session.has("admin");
  const status = h("div", { "aria-live": "polite" });
  const clusterBody = h("div", {}, notice("info", "Loading…"));
  const grantBody = h("div", {});
  let clusterNames = [];

  // Run an API call; say `what` (or the message the call returns) or the server's refusal.
  async function act(what, call) {
    try {
      const said = await call();
      replace(status, notice("ok", typeof said === "string" && said ? said : what));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
    load();
  }

  // Check a stored account against its cluster: who it is there, where it may act.
  async function check(c, a) {
    try {
      const r = await api(`/clusters/${enc(c.name)}/accounts/${enc(a.name)}/check`, { method: "POST" });
      const where = r.cluster_wide ? "every namespace" : r.namespaces.join(", ") || "no namespace checked";
      const who = r.subject_matches ? r.subject : `${r.subject} (stored as ${a.subject})`;
      replace(
        status,
        r.error
          ? notice("error", `Account ${a.name} on ${c.name}: ${r.error}`)
          : notice(r.subject_matches ? "ok" : "error", `Account ${a.name} on ${c.name}: authenticated as ${who}; may get pods in ${where}.`),
      );
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  // Import a kubeconfig ---------------------------------------------------------------------
  const kubeconfig = h("textarea", { name: "kubeconfig", rows: 8, class: "code", spellcheck: "false" });
  const importName = h("input", { name: "cluster-name", maxlength: 63 });
  const importContext = h("input", { name: "context", maxlength: 253 });
  const importForm = h(
    "form",
    {
      class: "stack import",
      onsubmit: (event) => {
        event.preventDefault();
        const body = { kubeconfig: kubeconfig.value };
        if (importName.value.trim()) body.name = importName.value.trim();
        if (importContext.value.trim()) body.context = importContext.value.trim();
        act("Cluster imported.", async () => {
          const r = await api("/clusters/import", { method: "POST", body });
          importForm.reset();
          return `Imported ${r.cluster.name} with account ${r.account.name}.`;
        });
      },
    },
    field("Kubeconfig (its credential goes into the vault; file references are refused)", kubeconfig),
    h("div", { class: "row" }, field("Cluster name (default: the context's)", importName), field("Context", importContext)),
    h("button", { type: "submit" }, "Import"),
  );

  // The stored account Casemate uses to provision and rotate on a cluster (its admin).
  function adminChoice(accounts) {
    const usable = accounts.filter((a) => !a.preset);
    return h(
      "select",
      { name: "admin-account", "aria-label": "Stored admin account" },
      usable.length ? null : h("option", { value: "" }, "(no stored account)"),
      usable.map((a) => h("option", { value: a.name }, a.name)),
    );
  }

  function provisionForm(cluster, withAccount) {
    const name = h("input", { name: "account", maxlength: 63, required: true });
    const namespaces = h("input", { name: "namespaces", required: true, placeholder: "team-a, team-b" });
    const preset = h(
      "select",
      { name: "preset" },
      ["view", "edit", "admin"].map((p) => h("option", { value: p }, p)),
    );
    return h(
      "form",
      {
        class: "inline provision",
        onsubmit: (event) => {
          event.preventDefault();
          act(`Account ${name.value} provisioned on ${cluster.name}.`, () =>
            api(`/clusters/${enc(cluster.name)}/accounts/provision`, {
              method: "POST",
              body: {
                name: name.value.trim(),
                namespaces: words(namespaces.value),
                preset: preset.value,
                admin_account: withAccount.value || null,
              },
            }),
          );
        },
      },
      field("Account", name),
      field("Namespaces", namespaces),
      field("Preset", preset),
      h("button", { type: "submit" }, "Provision"),
    );
  }

  async function clusterBlock(c) {
    const accounts = await api(`/clusters/${enc(c.name)}/accounts`);
    const withAccount = adminChoice(accounts);
    const rows = accounts.map((a) =>
      h(
        "tr",
        { "data-account": a.name },
        h("td", {}, a.name),
        h("td", {}, a.kind, a.preset ? ` (${a.preset})` : ""),
        h("td", {}, a.subject),
        h("td", {}, a.namespaces.join(", ") || "all"),
        h("td", {}, a.rotated_at ? `rotated ${when(a.rotated_at)}` : `created ${when(a.created_at)}`),
        h(
          "td",
          {},
          admin
            ? h(
                "span",
                { class: "actions" },
                h("button", { class: "check", onclick: () => check(c, a) }, "Check"),
                a.preset
                  ? h(
                      "button",
                      {
                        class: "rotate",
                        onclick: () =>
                          act(`Account ${a.name} rotated.`, () =>
                            api(`/clusters/${enc(c.name)}/accounts/${enc(a.name)}/rotate`, {
                              method: "POST",
                              body: { admin_account: withAccount.value || null },
                            }),
                          ),
                      },
                      "Rotate",
                    )
                  : null,
                h(
                  "button",
                  {
                    class: "danger",
                    onclick: () => {
                      if (!window.confirm(`Remove account ${a.name} from ${c.name}?`)) return;
                      act(`Account ${a.name} removed.`, () =>
                        api(`/clusters/${enc(c.name)}/accounts/${enc(a.name)}`, { method: "DELETE" }),
                      );
                    },
                  },
                  "Remove",
                ),
              )
            : null,
        ),
      ),
    );
    return h(
      "section",
      { class: "cluster", "data-cluster": c.name },
      h(
        "h3",
        {},
        c.name,
        h("span", { class: "muted" }, ` ${c.server}${c.disabled ? " (disabled)" : ""}`),
      ),
      h("p", { class: "muted" }, c.description, ` CA ${c.ca_fingerprint}`),
      rows.length
        ? table(["Account", "Kind", "Kubernetes user", "Namespaces", "Changed", ""], rows)
        : notice("info", "No system accounts."),
      admin
        ? h(
            "div",
            { class: "row" },
            field("Provision and rotate with", withAccount),
          )
        : null,
      admin ? provisionForm(c, withAccount) : null,
      admin
        ? h(
            "button",
            {
              onclick: () =>
                act(`${c.name} ${c.disabled ? "enabled" : "disabled"}.`, () =>
                  api(`/clusters/${enc(c.name)}`, { method: "PATCH", body: { disabled: !c.disabled } }),
                ),
            },
            c.disabled ? "Enable cluster" : "Disable cluster",
          )
        : null,
    );
  }

  // Grants ----------------------------------------------------------------------------------
  const subject = h("input", { name: "subject", maxlength: 64, required: true, placeholder: "user or @group" });
  const gCluster = h("input", { name: "grant-cluster", maxlength: 63, required: true, list: "cluster-names" });
  const gAccount = h("input", { name: "grant-account", maxlength: 63, required: true });
  const gNamespaces = h("input", { name: "grant-namespaces", required: true });
  const gExpires = h("input", { name: "expires", type: "datetime-local" });
  const gNote = h("input", { name: "note", maxlength: 500 });
  const clusterList = h("datalist", { id: "cluster-names" });
  const grantForm = h(
    "form",
    {
      class: "stack grant",
      onsubmit: (event) => {
        event.preventDefault();
        const who = subject.value.trim();
        const body = {
          cluster: gCluster.value.trim(),
          account: gAccount.value.trim(),
          namespaces: words(gNamespaces.value),
          note: gNote.value,
        };
        if (who.startsWith("@")) body.group = who.slice(1);
        else body.user = who;
        if (gExpires.value) body.expires_at = new Date(gExpires.value).toISOString();
        act(`Grant for ${who} added.`, async () => {
          await api("/grants", { method: "POST", body });
          grantForm.reset();
        });
      },
    },
    h(
      "div",
      { class: "row" },
      field("Who", subject),
      field("Cluster", gCluster),
      field("Account", gAccount),
      field("Namespaces", gNamespaces),
      field("Expires", gExpires),
      field("Note", gNote),
    ),
    clusterList,
    h("button", { type: "submit" }, "Add grant"),
  );

  function grantRow(g) {
    return h(
      "tr",
      { "data-grant": g.id },
      h("td", {}, g.subject_kind === "group" ? `@${g.subject}` : g.subject),
      h("td", {}, g.cluster),
      h("td", {}, g.account),
      h("td", {}, g.namespaces.join(", ")),
      h("td", {}, g.expires_at ? when(g.expires_at) : "never"),
      h("td", {}, g.state),
      h("td", {}, g.note),
      h(
        "td",
        {},
        admin && g.state === "active"
          ? h(
              "button",
              {
                class: "danger",
                onclick: () =>
                  act(`Grant ${g.id} revoked.`, () =>
                    api(`/grants/${g.id}/revoke`, { method: "POST", body: {} }),
                  ),
              },
              "Revoke",
            )
          : null,
      ),
    );
  }

  async function load() {
    try {
      const [clusters, grants] = await Promise.all([api("/clusters"), api("/grants")]);
      clusterNames = clusters.map((c) => c.name);
      replace(clusterList, clusterNames.map((n) => h("option", { value: n })));
      const blocks = await Promise.all(clusters.map(clusterBlock));
      replace(clusterBody, blocks.length ? blocks : notice("info", "No clusters yet: import a kubeconfig."));
      replace(
        grantBody,
        grants.length
          ? table(["Who", "Cluster", "Account", "Namespaces", "Expires", "State", "Note", ""], grants.map(grantRow))
          : notice("info", "No grants."),
      );
    } catch (e) {
      replace(clusterBody, notice("error", e.message));
    }
  }

  replace(
    view,
    h("h1", {}, "Clusters, accounts and grants"),
    status,
    clusterBody,
    admin ? h("details", {}, h("summary", {}, "Import a kubeconfig"), importForm) : null,
    h("h2", {}, "Grants"),
    grantBody,
    admin ? grantForm : null,
  );
  load();
}
