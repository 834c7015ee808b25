// The asset tree (GET /assets): the clusters of the person's grants → namespaces → workloads →
// pods → containers, with status. "Shell", "Logs" and "Download a file" open the web terminal on
// that cluster and namespace and type one line into it (`kubectl exec -it POD -c C -- sh`,
// `kubectl logs -f POD -c C`, `kubectl cp POD:PATH ./NAME -c C`), so it goes through the command
// policy and review like any command typed there; a copied file lands in the session's
// workspace, which the terminal page's "Files" panel lists for download.

import { api } from "../api.js";
import { h, notice, replace } from "../dom.js";

/** The POSIX-shell quoting of one word (names are DNS labels; quote anyway). */
function quote(word) {
  return /^[A-Za-z0-9._-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

export function shellLine(pod, container) {
  return `kubectl exec -it ${quote(pod)} -c ${quote(container)} -- sh`;
}

export function logsLine(pod, container) {
  return `kubectl logs -f ${quote(pod)} -c ${quote(container)}`;
}

/** A container path the terminal page accepts (absolute, plain characters, no ".."). */
export const COPYABLE = /^\/[A-Za-z0-9._\/-]{0,1023}$/;

/** `kubectl cp POD:PATH ./NAME -c C`, or null for a path the terminal would not type. */
export function copyLine(pod, container, path) {
  const name = path.split("/").pop();
  if (!COPYABLE.test(path) || path.includes("..") || !/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(name))
    return null;
  return `kubectl cp ${pod}:${path} ./${name} -c ${container}`;
}

function terminalHref(cluster, ns, run) {
  return `#/terminal/${encodeURIComponent(cluster)}?${new URLSearchParams({ ns, run })}`;
}

function containerRow(cluster, ns, pod, c) {
  const href = terminalHref(cluster, ns, shellLine(pod.name, c.name));
  const logs = terminalHref(cluster, ns, logsLine(pod.name, c.name));
  const fetchFile = () => {
    const path = prompt(`A file in ${pod.name}/${c.name} to copy into your workspace:`, "/");
    if (path === null) return;
    const run = copyLine(pod.name, c.name, path.trim());
    if (!run) {
      alert("Give an absolute path of letters, digits, '.', '_', '-' and '/' (no '..').");
      return;
    }
    location.hash = terminalHref(cluster, ns, run);
  };
  return h(
    "li",
    { class: "container", "data-pod": pod.name, "data-container": c.name },
    h("code", {}, c.name),
    " ",
    h("span", { class: c.ready ? "ok" : "muted" }, c.state),
    " ",
    h("span", { class: "muted" }, c.image),
    " ",
    h("a", { class: "button shell", href }, "Shell"),
    " ",
    h("a", { class: "button logs", href: logs }, "Logs"),
    " ",
    h("button", { class: "copy-file", onclick: fetchFile }, "Download a file"),
  );
}

function podItem(cluster, ns, pod) {
  return h(
    "li",
    { class: "pod" },
    h("code", {}, pod.name),
    ` ${pod.phase || "unknown"}`,
    h(
      "ul",
      {},
      pod.containers.map((c) => containerRow(cluster, ns, pod, c)),
    ),
  );
}

function namespaceItem(cluster, ns) {
  let content;
  if (ns.error) content = notice("error", ns.error);
  else if (ns.workloads.length === 0) content = h("p", { class: "muted" }, "No pods.");
  else
    content = h(
      "ul",
      {},
      ns.workloads.map((w) =>
        h(
          "li",
          { class: "workload" },
          `${w.kind} `,
          h("strong", {}, w.name),
          h(
            "ul",
            {},
            w.pods.map((p) => podItem(cluster, ns.name, p)),
          ),
        ),
      ),
    );
  return h(
    "details",
    { class: "namespace", open: true, "data-namespace": ns.name },
    h("summary", {}, `namespace ${ns.name}`),
    content,
  );
}

export function assets({ view }) {
  const body = h("div", {}, notice("info", "Loading…"));
  const refresh = h("button", { onclick: () => load() }, "Refresh");
  const heading = h("div", { class: "heading" }, h("h1", {}, "Assets"), refresh);
  replace(view, heading, body);

  async function load() {
    try {
      const list = await api("/assets");
      if (list.length === 0) {
        replace(body, notice("info", "You have no grants on any cluster."));
        return;
      }
      replace(
        body,
        list.map((c) =>
          h(
            "section",
            { class: "cluster", "data-cluster": c.name },
            h("h2", {}, c.name),
            c.namespaces.map((ns) => namespaceItem(c.name, ns)),
          ),
        ),
      );
    } catch (e) {
      replace(body, notice("error", e.message));
    }
  }

  load();
}
