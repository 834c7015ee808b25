// The command policy and API rules (GET/PUT /policies/commands, /history, /versions/<n>,
// /test, /api-rules, /api-rules/test). Admins edit and revert; auditors read and test. A 422
// names the line, which the editor selects. The test boxes ask "what would this command line
// get?" and "what would the API proxy do with this request?" (decided only, never sent).

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

  // "What would this API request get?" (the API proxy's rules; nothing is sent) -------------
  const apiMethod = h(
    "select",
    { name: "method" },
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].map((m) => h("option", { value: m }, m)),
  );
  const apiPath = h("input", {
    name: "path",
    required: true,
    maxlength: 8192,
    placeholder: "/api/v1/namespaces/prod/pods/web-0",
  });
  const apiBody = h("textarea", {
    name: "body",
    rows: 4,
    class: "code",
    spellcheck: "false",
    placeholder: "optional: the JSON or YAML body of a create, update or patch",
  });
  const apiType = h(
    "select",
    { name: "content-type" },
    [
      "application/json",
      "application/yaml",
      "application/merge-patch+json",
      "application/strategic-merge-patch+json",
      "application/json-patch+json",
      "application/apply-patch+yaml",
    ].map((t) => h("option", { value: t }, t)),
  );
  const apiUser = h("input", { name: "api-user", maxlength: 64, placeholder: "(you)" });
  const apiGroups = h("input", { name: "api-groups", placeholder: "group, …" });
  const apiCluster = h("input", { name: "api-cluster", maxlength: 200 });
  const apiNamespaces = h("input", { name: "api-namespaces", value: "*", placeholder: "team-a, team-*" });
  const apiDraft = h("input", { type: "checkbox", name: "api-draft" });
  const apiAnswer = h("div", { class: "verdict api-verdict", "aria-live": "polite" });
  const apiForm = h(
    "form",
    {
      class: "stack api-test",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {
          method: apiMethod.value,
          path: apiPath.value.trim(),
          content_type: apiType.value,
          groups: words(apiGroups.value),
          cluster: apiCluster.value.trim(),
          namespaces: words(apiNamespaces.value).length ? words(apiNamespaces.value) : ["*"],
        };
        if (apiBody.value.trim()) body.body = apiBody.value;
        if (apiUser.value.trim()) body.user = apiUser.value.trim();
        if (apiDraft.checked) body.yaml = editor.value;
        try {
          const v = await api("/policies/commands/api-rules/test", { method: "POST", body });
          replace(
            apiAnswer,
            h(
              "p",
              { class: `notice ${v.allowed ? "ok" : "error"}` },
              h("strong", {}, v.action),
              v.rule ? ` by rule ${v.rule}` : " (no rule: the default)",
              `: ${v.reason}`,
            ),
            v.warnings.map((w) => h("p", { class: "muted" }, `warning ${w.rule}: ${w.reason}`)),
            h("p", { class: "muted read-as" }, `Read as: ${v.request.describe} (${v.request.scope})`),
          );
        } catch (e) {
          const at = e.problem?.line ? `Line ${e.problem.line}: ` : "";
          replace(apiAnswer, notice("error", at + e.message));
        }
      },
    },
    h("div", { class: "row" }, field("Method", apiMethod), field("Path and query", apiPath)),
    field("Body", apiBody),
    h(
      "div",
      { class: "row" },
      field("Content type", apiType),
      field("User", apiUser),
      field("Groups", apiGroups),
      field("Cluster", apiCluster),
      field("Granted namespaces", apiNamespaces),
    ),
    h("label", { class: "check" }, apiDraft, "try the api_rules of the text in the editor"),
    h("p", { class: "muted" }, "Decided as the API proxy decides; nothing is sent to a cluster."),
    h("button", { type: "submit" }, "Test request"),
    apiAnswer,
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
              h("button", { class: "show-diff", onclick: () => showVersion(v.version) }, "Diff"),
              admin && v.version !== doc.version
                ? h("button", { class: "revert", onclick: () => revert(v.version) }, "Revert to this")
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
    h("h1", {}, "Command policy and API rules"),
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
    h("h3", {}, "What would this API request get?"),
    apiForm,
    showRules,
    apiRules,
  );
  load();
}
