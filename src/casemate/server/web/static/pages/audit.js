// Audit search (GET /audit with filters, keyset paging), one record's details, export of the
// records found (JSON lines) or of the verifiable form (GET /audit/export), and the hash
// chain's verification (GET /audit/verify).
// Auditors and admins.

import { api } from "../api.js";
import { field, h, notice, replace, saveText, table, when } from "../dom.js";

const FILTERS = [
  ["actor", "User"],
  ["cluster", "Cluster"],
  ["kind", "Type (exact, or a prefix with *)"],
  ["decision", "Decision"],
  ["outcome", "Outcome"],
  ["q", "Text"],
];

const EXPORT_MAX = 100_000;

function summary(r) {
  const d = r.details ?? {};
  const bits = [d.cluster, d.namespace, d.line ?? d.command ?? d.path ?? d.target, d.decision];
  return bits.filter((b) => typeof b === "string" && b).join(" · ");
}

function isoOrNull(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

export function audit({ view, query }) {
  const status = h("div", { "aria-live": "polite" });
  const inputs = Object.fromEntries(
    FILTERS.map(([name]) => [name, h("input", { name, maxlength: 200, value: query.get(name) ?? "" })]),
  );
  const since = h("input", { name: "since", type: "datetime-local" });
  const until = h("input", { name: "until", type: "datetime-local" });
  const order = h(
    "select",
    { name: "order" },
    h("option", { value: "newest" }, "newest first"),
    h("option", { value: "oldest" }, "oldest first"),
  );
  const body = h("div", {});
  const details = h("div", { class: "record" });
  const more = h("button", { hidden: true, onclick: () => search(true) }, "More");
  let found = [];
  let next = null;

  function params(after, limit = 100) {
    const p = new URLSearchParams();
    for (const [name] of FILTERS) {
      const value = inputs[name].value.trim();
      if (value) p.set(name, value);
    }
    const from = isoOrNull(since.value);
    const to = isoOrNull(until.value);
    if (from) p.set("since", from);
    if (to) p.set("until", to);
    p.set("order", order.value);
    p.set("limit", String(limit));
    if (after !== null) p.set("after", String(after));
    return p;
  }

  function show(r) {
    replace(
      details,
      h("h2", {}, `Record ${r.seq}: ${r.kind}`),
      h(
        "dl",
        {},
        [
          ["Time", when(r.ts)],
          ["Actor", r.actor],
          ["Source", r.source],
          ["Outcome", r.outcome],
          ["Event version", r.event_version],
          ["Hash", r.hash],
          ["Previous", r.prev_hash],
        ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? ""))]),
      ),
      h("pre", { class: "code" }, JSON.stringify(r.details, null, 2)),
    );
    details.scrollIntoView({ block: "nearest" });
  }

  function render() {
    if (!found.length) {
      replace(body, notice("info", "No records match."));
      return;
    }
    const rows = found.map((r) =>
      h(
        "tr",
        { "data-seq": r.seq },
        h("td", { class: "num" }, h("a", { href: `#/audit?seq=${r.seq}`, onclick: (e) => { e.preventDefault(); show(r); } }, r.seq)),
        h("td", {}, when(r.ts)),
        h("td", {}, r.kind),
        h("td", {}, r.actor),
        h("td", {}, r.outcome),
        h("td", {}, summary(r)),
      ),
    );
    replace(body, table(["#", "Time", "Type", "Actor", "Outcome", "What"], rows));
  }

  async function search(append = false) {
    try {
      const page = await api(`/audit?${params(append ? next : null)}`);
      found = append ? found.concat(page.items) : page.items;
      next = page.next_after;
      more.hidden = next === null;
      replace(status);
      render();
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  const verify = h(
    "button",
    {
      type: "button",
      onclick: async () => {
        replace(status, notice("info", "Verifying the whole chain…"));
        try {
          const v = await api("/audit/verify");
          replace(
            status,
            v.ok
              ? notice("ok", `The chain verifies: ${v.checked} records checked.`)
              : notice("error", `The chain is broken at record ${v.first_bad_seq}: ${v.problem}`),
          );
        } catch (e) {
          replace(status, notice("error", e.message));
        }
      },
    },
    "Verify the chain",
  );
  // Export every record the filters match (all pages, not only those shown), as JSON lines.
  async function exportAll() {
    replace(status, notice("info", "Collecting the matching records…"));
    try {
      const all = [];
      let after = null;
      do {
        const page = await api(`/audit?${params(after, 1000)}`);
        all.push(...page.items);
        after = page.next_after;
      } while (after !== null && all.length < EXPORT_MAX);
      const lines = all.slice(0, EXPORT_MAX).map((r) => JSON.stringify(r));
      saveText("casemate-audit.jsonl", lines.join("\n") + (lines.length ? "\n" : ""), "application/x-ndjson");
      const cut = after !== null ? ` (stopped at ${EXPORT_MAX}; narrow the filters for the rest)` : "";
      replace(status, notice(after !== null ? "error" : "ok", `Exported ${lines.length} records${cut}.`));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }
  const exportButton = h("button", { type: "button", class: "export", onclick: exportAll }, "Export these records");

  // The verifiable form (GET /audit/export: each record's stored body with its hashes, oldest
  // first), which `casemate audit verify --file` checks offline; unfiltered, the whole chain.
  async function exportVerifiable() {
    const p = params(null);
    if (p.has("cluster") || p.has("decision")) {
      replace(status, notice("error", "The verifiable export filters by user, type, outcome, time and text: clear Cluster and Decision."));
      return;
    }
    for (const name of ["order", "limit"]) p.delete(name);
    replace(status, notice("info", "Exporting…"));
    try {
      const text = await (await api(`/audit/export?${p}`, { raw: true })).text();
      const count = text.split("\n").filter(Boolean).length;
      saveText("casemate-audit-export.jsonl", text, "application/x-ndjson");
      const whole = p.toString() === "" ? " (the whole chain: casemate audit verify --file checks it)" : "";
      replace(status, notice("ok", `Exported ${count} records for verification${whole}.`));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }
  const verifiableButton = h(
    "button",
    { type: "button", class: "export-verifiable", onclick: exportVerifiable },
    "Export for verification",
  );

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        search();
      },
    },
    FILTERS.map(([name, label]) => field(label, inputs[name])),
    field("From", since),
    field("Until", until),
    field("Order", order),
    h("span", { class: "actions" }, h("button", { type: "submit" }, "Search"), exportButton, verifiableButton, verify),
  );

  replace(view, h("h1", {}, "Audit log"), form, status, body, more, details);
  search();
}
