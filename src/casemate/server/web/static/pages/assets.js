// The asset tree (GET /assets): the clusters of the person's grants → namespaces → workloads →
// pods → containers, with status. "Shell" opens the web terminal on that cluster and namespace
// and types `kubectl exec -it POD -c CONTAINER -- sh` into it, so the exec goes through the
// command policy and review like any command typed there.

import { api } from "../api.js";
import { h, notice, replace } from "../dom.js";

/** The POSIX-shell quoting of one word (names are DNS labels; quote anyway). */
function quote(word) {
  return /^[A-Za-z0-9._-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

export function shellLine(pod, container) {
  return `kubectl exec -it ${quote(pod)} -c ${quote(container)} -- sh`;
}

function containerRow(cluster, ns, pod, c) {
  const params = new URLSearchParams({ ns, run: shellLine(pod.name, c.name) });
  const href = `#/terminal/${encodeURIComponent(cluster)}?${params}`;
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
