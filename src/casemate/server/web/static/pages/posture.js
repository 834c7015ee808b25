// Posture: scan a registered cluster (POST /posture/scan) and show its open findings by
// namespace and severity, every finding (excepted ones marked, never hidden), and the stored
// exceptions (GET/POST/DELETE /posture/exceptions). Auditors scan and read; admins add and
// delete exceptions.

import { api, session } from "../api.js";
import { field, h, notice, replace, table, when } from "../dom.js";

const SEVERITIES = ["critical", "high", "medium", "low"];

function summaryTable(result) {
  const rows = Object.entries(result.by_namespace).map(([ns, counts]) =>
    h(
      "tr",
      { "data-namespace": ns },
      h("td", {}, ns || "(cluster)"),
      SEVERITIES.map((s) => h("td", { class: `sev-${s}` }, String(counts[s] ?? 0))),
    ),
  );
  return table(["Namespace", ...SEVERITIES], rows);
}

function findingsTable(result) {
  const rows = result.findings.map((f) => {
    const o = f.object;
    const ref = `${o.kind}/${o.namespace ? `${o.namespace}/` : ""}${o.name}`;
    const state = f.exception
      ? `excepted (${f.exception.id}, ${f.exception.owner}: ${f.exception.reason})`
      : "open";
    return h(
      "tr",
      { class: f.exception ? "excepted" : "open" },
      h("td", {}, f.severity),
      h("td", {}, h("code", {}, f.rule)),
      h("td", {}, ref),
      h("td", {}, f.path),
      h("td", {}, f.message),
      h("td", { class: "state" }, state),
    );
  });
  return table(["Severity", "Rule", "Object", "Field", "Message", "Status"], rows);
}

export function posture({ view }) {
  const admin = session.has("admin");
  const status = h("div", { "aria-live": "polite" });
  const cluster = h("select", { name: "cluster", "aria-label": "Cluster" });
  const namespace = h("input", { name: "namespace", maxlength: 63, placeholder: "all namespaces" });
  const results = h("div", { class: "posture-results" });
  const exceptions = h("div", { class: "posture-exceptions" });

  async function loadClusters() {
    try {
      const found = await api("/clusters");
      replace(cluster, found.map((c) => h("option", { value: c.name }, c.name)));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  async function scan(event) {
    event?.preventDefault();
    if (!cluster.value) return replace(status, notice("error", "Register a cluster first."));
    replace(status, notice("info", `Scanning ${cluster.value}…`));
    try {
      const body = { cluster: cluster.value };
      if (namespace.value.trim()) body.namespace = namespace.value.trim();
      const r = await api("/posture/scan", { method: "POST", body });
      const open = SEVERITIES.map((s) => `${r.by_severity[s] ?? 0} ${s}`).join(", ");
      replace(
        status,
        notice("ok", `${r.objects} objects checked: ${open}; ${r.excepted} excepted.`),
        r.problems.map((p) => notice("error", `Not checked: ${p}`)),
        r.expired_exceptions.map((id) => notice("info", `Exception ${id} has expired.`)),
      );
      replace(
        results,
        h("h3", {}, "Open findings by namespace"),
        summaryTable(r),
        h("h3", {}, "Findings"),
        r.truncated ? notice("info", "Only the first findings are shown.") : null,
        findingsTable(r),
      );
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  async function remove(id) {
    try {
      await api(`/posture/exceptions/${id}`, { method: "DELETE" });
      await loadExceptions();
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  const form = {
    rule: h("input", { name: "rule", maxlength: 200, required: true }),
    namespace: h("input", { name: "ex-namespace", maxlength: 63 }),
    kind: h("input", { name: "kind", maxlength: 63 }),
    name: h("input", { name: "name", maxlength: 253 }),
    labels: h("input", { name: "labels", maxlength: 500, placeholder: "app=agent, tier=1" }),
    owner: h("input", { name: "owner", maxlength: 200, required: true }),
    reason: h("input", { name: "reason", maxlength: 1000, required: true }),
    expires: h("input", { name: "expires", maxlength: 64, value: "30d", required: true }),
  };

  async function add(event) {
    event.preventDefault();
    const labels = {};
    for (const pair of form.labels.value.split(",").map((p) => p.trim()).filter(Boolean)) {
      const [key, ...rest] = pair.split("=");
      labels[key.trim()] = rest.join("=").trim();
    }
    const body = { labels };
    for (const key of ["rule", "namespace", "kind", "name", "owner", "reason", "expires"]) {
      body[key] = form[key].value.trim();
    }
    try {
      const created = await api("/posture/exceptions", { method: "POST", body });
      replace(status, notice("ok", `Exception ${created.id} stored.`));
      await loadExceptions();
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  async function loadExceptions() {
    try {
      const found = await api("/posture/exceptions");
      const rows = found.map((e) => {
        const scope = [e.namespace, e.kind && `${e.kind}/${e.name || "*"}`, !e.kind && e.name,
          Object.entries(e.labels).map(([k, v]) => `${k}=${v}`).join(",")]
          .filter(Boolean).join(" ");
        return h(
          "tr",
          { "data-exception": e.id, class: e.expired ? "expired" : "active" },
          h("td", {}, String(e.id)),
          h("td", {}, h("code", {}, e.rule)),
          h("td", {}, scope),
          h("td", {}, e.owner),
          h("td", {}, e.reason),
          h("td", {}, `${when(e.expires_at)}${e.expired ? " (expired)" : ""}`),
          h("td", {}, admin ? h("button", { class: "danger", onclick: () => remove(e.id) }, "Delete") : ""),
        );
      });
      replace(
        exceptions,
        found.length
          ? table(["Id", "Rule", "Scope", "Owner", "Reason", "Expires", ""], rows)
          : notice("info", "No exceptions."),
      );
    } catch (e) {
      replace(exceptions, notice("error", e.message));
    }
  }

  replace(
    view,
    h("h2", {}, "Posture"),
    h("form", { class: "posture-scan", onsubmit: scan }, field("Cluster", cluster),
      field("Namespace", namespace), h("button", { type: "submit" }, "Scan")),
    status,
    results,
    h("h3", {}, "Exceptions"),
    exceptions,
    admin
      ? h("form", { class: "posture-exception", onsubmit: add },
          Object.entries(form).map(([key, input]) => field(key[0].toUpperCase() + key.slice(1), input)),
          h("button", { type: "submit" }, "Add exception"))
      : null,
  );
  loadClusters();
  loadExceptions();
}
