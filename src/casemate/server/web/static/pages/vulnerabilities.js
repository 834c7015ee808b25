// Vulnerabilities: the advisory index (GET /vuln/advisories), scans of images of the server's
// Docker engine with their findings by severity (POST/GET /vuln/scans), a remediation plan with
// the second manifest's diff (POST /vuln/plans), and the rollout history (GET /vuln/rollouts).
// Everything from the server goes in as text (dom.js).

import { api, session } from "../api.js";
import { field, h, notice, replace, table, when } from "../dom.js";

const SEVERITIES = ["critical", "high", "medium", "low", "unknown"];

function findingsView(scan) {
  const counts = Object.fromEntries(SEVERITIES.map((s) => [s, 0]));
  for (const f of scan.findings) counts[f.severity] = (counts[f.severity] ?? 0) + 1;
  const order = (f) => SEVERITIES.indexOf(f.severity);
  const rows = [...scan.findings]
    .sort((a, b) => order(a) - order(b) || a.package.localeCompare(b.package))
    .map((f) => h(
      "tr",
      { "data-severity": f.severity, "data-package": f.package },
      h("td", {}, f.severity),
      h("td", {}, f.package),
      h("td", {}, f.installed),
      h("td", {}, f.fixed ?? f.state),
      h("td", {}, f.cves.length ? f.cves.join(", ") : f.advisory),
      h("td", {}, f.image),
      h("td", {}, f.binaries.join(" ")),
    ));
  return h(
    "div",
    { class: "scan-result", "data-scan": scan.id },
    h("h3", {}, `Scan ${scan.id}: ${scan.target}`),
    h("p", { class: "severity-counts" },
      SEVERITIES.map((s) => h("span", { class: `badge severity-${s}`, "data-count": s }, `${s}: ${counts[s]}`))),
    scan.images.map((i) => h("p", {}, `${i.image} — ${i.os ?? "unknown OS"}, ${i.packages} packages, ${i.findings} findings`)),
    scan.problems.map((p) => notice("error", p)),
    rows.length
      ? table(["Severity", "Package", "Installed", "Fixed", "Vulnerability", "Image", "Install"], rows)
      : notice("ok", "No findings."),
  );
}

export function vulnerabilities({ view }) {
  const admin = session.has("admin");
  const advisories = h("div", { class: "advisories" }, notice("info", "Loading…"));
  const scans = h("div", { class: "scans" });
  const result = h("div", { "aria-live": "polite" });
  const planOut = h("div", { class: "plan", "aria-live": "polite" });
  const rollouts = h("div", { class: "rollouts" });

  const image = h("input", { name: "image", maxlength: 500, required: true, placeholder: "debian:12" });
  const scanForm = h(
    "form",
    {
      class: "scan-image",
      onsubmit: async (event) => {
        event.preventDefault();
        replace(result, notice("info", "Scanning…"));
        try {
          const scan = await api("/vuln/scans", { method: "POST", body: { image: image.value.trim() } });
          replace(result, findingsView(scan));
          loadScans();
        } catch (e) {
          replace(result, notice("error", e.message));
        }
      },
    },
    field("Image (of the server's Docker engine)", image),
    h("button", { type: "submit" }, "Scan"),
  );

  const manifest = h("textarea", { name: "manifest", rows: 10, required: true, spellcheck: "false" });
  const mirror = h("input", { name: "mirror", maxlength: 500, placeholder: "default: the distribution's security archive" });
  const planForm = h(
    "form",
    {
      class: "plan-manifest",
      onsubmit: async (event) => {
        event.preventDefault();
        replace(planOut, notice("info", "Planning…"));
        const body = { manifest: manifest.value };
        if (mirror.value.trim()) body.security_mirror = mirror.value.trim();
        try {
          const plan = await api("/vuln/plans", { method: "POST", body });
          const rows = plan.rows.map((r) => h(
            "tr",
            { "data-container": r.container },
            h("td", {}, r.workload),
            h("td", {}, `${r.container} (${r.image})`),
            h("td", {}, r.lines.map((line) => h("div", {}, line))),
          ));
          replace(
            planOut,
            table(["Workload", "Container", "Plan"], rows),
            plan.problems.map((p) => notice("error", p)),
            plan.remediated === null
              ? notice("info", "Nothing can be fixed in place: no second manifest.")
              : h("pre", { class: "diff" }, plan.diff),
          );
        } catch (e) {
          replace(planOut, notice("error", e.message));
        }
      },
    },
    field("Manifest (YAML)", manifest),
    field("Security mirror", mirror),
    h("button", { type: "submit" }, "Plan"),
  );

  replace(
    view,
    h("h1", {}, "Vulnerabilities"),
    h("h2", {}, "Advisories"), advisories,
    h("h2", {}, "Scans"), admin ? scanForm : null, result, scans,
    admin ? [h("h2", {}, "Remediation plan"), planForm, planOut] : null,
    h("h2", {}, "Rollouts"), rollouts,
  );

  function loadScans() {
    return api("/vuln/scans").then((list) => {
      if (list.length === 0) return replace(scans, notice("info", "No scans yet."));
      const rows = list.map((s) => h(
        "tr",
        { "data-scan": s.id },
        h("td", {}, h("a", {
          href: "#/vulnerabilities",
          onclick: async (event) => {
            event.preventDefault();
            try {
              replace(result, findingsView(await api(`/vuln/scans/${encodeURIComponent(s.id)}`)));
            } catch (e) {
              replace(result, notice("error", e.message));
            }
          },
        }, s.id)),
        h("td", {}, s.target),
        h("td", {}, s.images.map((i) => i.image).join(", ")),
        h("td", {}, String(s.findings)),
        h("td", {}, String(s.problems)),
      ));
      return replace(scans, table(["Scan", "Target", "Images", "Findings", "Problems"], rows));
    }).catch((e) => replace(scans, notice("error", e.message)));
  }

  api("/vuln/advisories")
    .then((list) => replace(advisories, list.length === 0
      ? notice("info", "No advisories loaded (casemate vuln db import / update).")
      : table(["Kind", "Advisories", "Ecosystems", "Imported", "Origin"], list.map((s) => h(
        "tr", {},
        h("td", {}, s.kind), h("td", {}, String(s.advisories)), h("td", {}, s.ecosystems.join(" ")),
        h("td", {}, when(s.imported_at)), h("td", {}, s.origin),
      )))))
    .catch((e) => replace(advisories, notice("error", e.message)));
  loadScans();
  api("/vuln/rollouts")
    .then((list) => replace(rollouts, list.length === 0
      ? notice("info", "No rollouts yet.")
      : table(["Rollout", "Cluster", "Workloads", "Outcome", "Steps", "Diff"], list.map((r) => h(
        "tr", { "data-rollout": r.id, "data-phase": r.phase },
        h("td", {}, r.id), h("td", {}, r.cluster), h("td", {}, r.workloads.join(", ")),
        h("td", {}, `${r.phase}${r.reason ? `: ${r.reason}` : ""}`),
        h("td", {}, r.steps.map((s) => h("div", {}, `${when(s.at)} ${s.phase}`))),
        h("td", {}, h("details", {}, h("summary", {}, "diff"), h("pre", { class: "diff" }, r.diff))),
      )))))
    .catch((e) => replace(rollouts, notice("error", e.message)));
}
