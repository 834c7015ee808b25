// The command policy and API rules (GET/PUT /policies/commands, /history, /versions/<n>,
// /test, /api-rules). Admins edit and revert; auditors read and test. A 422 names the line,
// which the editor selects. The test box asks "what would this command line get?".

import { api, session } from "../api.js";
import { field, h, notice, replace, table, when, words } from "../dom.js";

/** A line diff (longest common subsequence): [["=", line] | ["-", line] | ["+", line]]. */
export function diffLines(before, after) {
  const a = before.split("\n");
  const b = after.split("\n");
  if (a.length * b.length > 4_000_000) return [["-", "(too large to compare here)"]];
  const lcs = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      out.push(["=", a[i++]]);
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < a.length) out.push(["-", a[i++]]);
  while (j < b.length) out.push(["+", b[j++]]);
  return out;
}

function diffView(before, after) {
  const lines = diffLines(before, after).filter(([op]) => op !== "=");
  if (!lines.length) return notice("info", "No differences.");
  return h(
    "pre",
    { class: "diff" },
    lines.map(([op, text]) => h("span", { class: op === "+" ? "add" : "del" }, `${op} ${text}\n`)),
  );
}

function selectLine(textarea, line) {
  const lines = textarea.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  textarea.focus();
  textarea.setSelectionRange(start, start + (lines[line - 1] ?? "").length);
}

export function policy({ view }) {
  const admin = session.has("admin");
  const status = h("div", { "aria-live": "polite" });
  const info = h("p", { class: "muted" });
  const editor = h("textarea", {
    class: "code",
    name: "policy",
    rows: 24,
    spellcheck: "false",
    "aria-label": "Policy YAML",
    readonly: !admin,
  });
  const comment = h("input", { name: "comment", maxlength: 500, placeholder: "what changed and why" });
  let current = null;

  async function save(yaml, note) {
    try {
      const saved = await api("/policies/commands", {
        method: "PUT",
        body: { yaml, comment: note, base_version: current?.version ?? 0 },
      });
      replace(status, notice("ok", `Saved as version ${saved.version}.`));
      comment.value = "";
      await load();
    } catch (e) {
      const line = e.problem?.line;
      replace(status, notice("error", line ? `Line ${line}: ${e.message}` : e.message));
      if (line && yaml === editor.value) selectLine(editor, line);
    }
  }

  const editForm = h(
    "form",
    {
      class: "stack",
      onsubmit: (event) => {
        event.preventDefault();
        save(editor.value, comment.value);
      },
    },
    editor,
    admin
      ? h(
          "div",
          { class: "actions" },
          comment,
          h("button", { type: "submit" }, "Save"),
          h(
            "button",
            {
              type: "button",
              onclick: () => replace(diffBox, diffView(current?.yaml ?? "", editor.value)),
            },
            "Compare with saved",
          ),
        )
      : h("p", { class: "muted" }, "Read only: admins change the policy."),
  );
  const diffBox = h("div", {});

  // "What would this command get?" ------------------------------------------------------------
  const line = h("input", {
    name: "line",
    required: true,
    maxlength: 16384,
    placeholder: "kubectl delete pod web-0 -n prod",
  });
  const user = h("input", { name: "user", maxlength: 64, placeholder: "(you)" });
  const groups = h("input", { name: "groups", placeholder: "group, …" });
  const cluster = h("input", { name: "cluster", maxlength: 200 });
  const namespace = h("input", { name: "namespace", maxlength: 253, value: "default" });
  const useDraft = h("input", { type: "checkbox", name: "draft" });
  const answer = h("div", { class: "verdict", "aria-live": "polite" });
  const testForm = h(
    "form",
    {
      class: "stack test",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {
          line: line.value,
          groups: words(groups.value),
          cluster: cluster.value,
          namespace: namespace.value || "default",
        };
        if (user.value.trim()) body.user = user.value.trim();
        if (useDraft.checked) body.yaml = editor.value;
        try {
          const v = await api("/policies/commands/test", { method: "POST", body });
          replace(
            answer,
            h(
              "p",
              { class: `notice ${v.allowed ? "ok" : "error"}` },
              h("strong", {}, v.action),
              v.rule_id ? ` by rule ${v.rule_id}` : "",
              `: ${v.reason}`,
            ),
            v.warnings.map((w) => h("p", { class: "muted" }, `warning ${w.rule_id}: ${w.reason}`)),
          );
        } catch (e) {
          const at = e.problem?.line ? `Line ${e.problem.line}: ` : "";
          replace(answer, notice("error", at + e.message));
        }
      },
    },
    field("Command line", line),
    h(
      "div",
      { class: "row" },
      field("User", user),
      field("Groups", groups),
      field("Cluster", cluster),
      field("Namespace", namespace),
    ),
    h("label", { class: "check" }, useDraft, "try the text in the editor instead of the saved policy"),
    h("button", { type: "submit" }, "Test"),
    answer,
  );

  // History ---------------------------------------------------------------------------------
  const historyBody = h("div", {});
  async function showVersion(version) {
    try {
      const v = await api(`/policies/commands/versions/${version}`);
      replace(
        diffBox,
        h("h3", {}, `Version ${v.version} → the saved policy (version ${current.version})`),
        diffView(v.yaml, current.yaml),
      );
    } catch (e) {
      replace(diffBox, notice("error", e.message));
    }
  }
  async function revert(version) {
    try {
      const v = await api(`/policies/commands/versions/${version}`);
      await save(v.yaml, `revert to version ${version}`);
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  const apiRules = h("pre", { class: "code", hidden: true });
  const showRules = h(
    "button",
    {
      onclick: async () => {
        try {
          const r = await api("/policies/commands/api-rules?format=yaml", { raw: true });
          replace(apiRules, await r.text());
          apiRules.hidden = false;
        } catch (e) {
          replace(status, notice("error", e.message));
        }
      },
    },
    "Show the API rules in force",
  );

  async function load() {
    try {
      const [doc, history] = await Promise.all([
        api("/policies/commands"),
        api("/policies/commands/history?limit=50"),
      ]);
      current = doc;
      editor.value = doc.yaml;
      replace(
        info,
        doc.builtin ? "The built-in default policy" : `Version ${doc.version}`,
        doc.builtin ? "" : `, saved ${when(doc.created_at)} by ${doc.created_by}`,
        doc.comment ? ` (${doc.comment})` : "",
        doc.valid ? `; ${doc.rules} rules, default ${doc.default_action}.` : `; INVALID: ${doc.error}`,
      );
      const rows = history.map((v) =>
        h(
          "tr",
          { "data-version": v.version },
          h("td", { class: "num" }, v.version),
          h("td", {}, when(v.created_at)),
          h("td", {}, v.created_by),
          h("td", {}, v.comment),
          h(
            "td",
            {},
            h(
              "span",
              { class: "actions" },
              h("button", { onclick: () => showVersion(v.version) }, "Diff"),
              admin && v.version !== doc.version
                ? h("button", { onclick: () => revert(v.version) }, "Revert to this")
                : null,
            ),
          ),
        ),
      );
      replace(
        historyBody,
        rows.length
          ? table(["Version", "Saved", "By", "Comment", ""], rows)
          : notice("info", "Nothing stored yet: the built-in default is in force."),
      );
    } catch (e) {
      replace(status, notice("error", e.message));
    }
  }

  replace(
    view,
    h("h1", {}, "Command policy"),
    status,
    info,
    h("h2", {}, "What would this command get?"),
    testForm,
    h("h2", {}, "Policy"),
    editForm,
    diffBox,
    h("h2", {}, "History"),
    historyBody,
    h("h2", {}, "API rules"),
    showRules,
    apiRules,
  );
  load();
}
