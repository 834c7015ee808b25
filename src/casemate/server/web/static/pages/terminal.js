// The interactive terminal (WS /clusters/<cluster>/terminal) and the read-only view of a live
// session (WS /sessions/<id>/watch), both in a full-window xterm.js.
//
// Protocol: the client's first message is {"type": "auth", "token"}; then {"type": "input",
// "data"} and {"type": "resize", "cols", "rows"}; the server sends {"type": "output", "data"}
// and, at the end, {"type": "exit", "reason"}.

import { api, session, socket } from "../api.js";
import { h, plain, replace } from "../dom.js";
import { FitAddon, Terminal, xtermStyles } from "../libs.js";

/** Lay out the page and start `connect(term, status)` once xterm's styles are in. */
function fullWindow(view, title, back, readOnly, connect, extra = []) {
  const status = h("span", { class: "status", role: "status" }, "connecting…");
  const box = h("div", { class: "term" });
  const bar = h(
    "div",
    { class: "termbar" },
    h("a", { href: back.href }, `← ${back.label}`),
    h("strong", {}, title),
    status,
    ...extra,
  );
  replace(view, bar, box);
  let closed = false;
  let teardown = () => {};

  xtermStyles().then(() => {
    if (closed) return;
    const term = new Terminal({
      cursorBlink: !readOnly,
      disableStdin: readOnly,
      scrollback: 5000,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    let frame = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => fit.fit());
    });
    observer.observe(box);
    const setStatus = (text, kind = "") => {
      replace(status, text);
      status.className = `status ${kind}`;
    };
    const stop = connect(term, setStatus);
    if (!readOnly) term.focus();
    teardown = () => {
      observer.disconnect();
      cancelAnimationFrame(frame);
      stop();
      term.dispose();
    };
  });

  return () => {
    closed = true;
    teardown();
  };
}

/** Wire a websocket's output into the terminal and report how it ended. */
function stream(term, setStatus, path, { onOpen, onOutput } = {}) {
  let ended = false;
  const end = (text) => {
    if (ended) return;
    ended = true;
    term.options.disableStdin = true;
    setStatus(text, "ended");
    term.write(`\r\n\x1b[2m[${plain(text)}]\x1b[0m\r\n`);
  };
  const ws = socket(path, {
    onOpen: () => {
      setStatus("connected", "live");
      onOpen?.();
    },
    onMessage: (msg) => {
      if (msg.type === "output" && typeof msg.data === "string") {
        term.write(msg.data);
        onOutput?.();
      }
      else if (msg.type === "exit") end(`closed: ${msg.reason ?? "exit"}`);
    },
    onClose: (event) => {
      const why = event.reason ? `, ${event.reason}` : "";
      end(`disconnected (${event.code}${why})`);
    },
  });
  return ws;
}

// The lines a link may have typed for the user (?run=, from the asset tree): a shell in one
// container, its logs followed, or one file copied out of it into the workspace; policy and
// review then decide each like a line typed by hand. Anything else is ignored, so a crafted link
// cannot run another command in someone's session.
const POD = "[a-z0-9][a-z0-9.-]{0,252}";
const CONTAINER = "[a-z0-9][a-z0-9-]{0,62}";
const RUNNABLE = [
  new RegExp(`^kubectl exec -it ${POD} -c ${CONTAINER} -- sh$`),
  new RegExp(`^kubectl logs -f ${POD} -c ${CONTAINER}$`),
  new RegExp(
    `^kubectl cp ${POD}:/[A-Za-z0-9._/-]{0,1023} \\./[A-Za-z0-9_][A-Za-z0-9._-]{0,254} -c ${CONTAINER}$`,
  ),
];

export function runnable(line) {
  return RUNNABLE.some((shape) => shape.test(line)) && !line.includes("..");
}

/** Save one workspace file (fetched with the Bearer token; the server audits the download). */
async function saveFile(id, file) {
  const name = file.path.split("/").map(encodeURIComponent).join("/");
  const response = await api(`/sessions/${encodeURIComponent(id)}/files/${name}`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: file.path.split("/").pop() });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The "Files" panel: the workspace of this page's session (my newest web session here). */
async function showFiles(panel, cluster) {
  replace(panel, "Loading…");
  try {
    const me = session.user?.username;
    const mine = (await api("/sessions"))
      .filter((s) => s.user === me && s.cluster === cluster && s.channel === "web")
      .sort((a, b) => (a.started_at < b.started_at ? 1 : -1));
    if (mine.length === 0) {
      replace(panel, "No live session.");
      return;
    }
    const id = mine[0].session_id;
    const files = await api(`/sessions/${encodeURIComponent(id)}/files`);
    if (files.length === 0) {
      replace(panel, "The workspace is empty.");
      return;
    }
    replace(
      panel,
      h(
        "ul",
        {},
        files.map((f) => {
          const save = () => saveFile(id, f).catch((e) => replace(panel, e.message));
          return h(
            "li",
            { "data-file": f.path },
            h("code", {}, f.path),
            ` ${f.size} B `,
            h("button", { class: "download", onclick: save }, "Download"),
          );
        }),
      ),
    );
  } catch (e) {
    replace(panel, e.message);
  }
}

export function terminal({ view, args, query }) {
  const cluster = args[0] ?? "";
  const namespace = query.get("ns") || "";
  const asked = query.get("run") || "";
  let run = runnable(asked) ? asked : "";
  const title = namespace ? `${cluster} / ${namespace}` : cluster;
  const back = { href: "#/clusters", label: "Clusters" };
  const panel = h("div", { class: "filelist", "aria-live": "polite" });
  const files = h("button", { class: "files", onclick: () => showFiles(panel, cluster) }, "Files");
  const extra = [files, panel];
  return fullWindow(view, title, back, false, (term, setStatus) => {
    const params = new URLSearchParams({ cols: term.cols, rows: term.rows });
    if (namespace) params.set("namespace", namespace);
    const path = `/clusters/${encodeURIComponent(cluster)}/terminal?${params}`;
    const ws = stream(term, setStatus, path, {
      // the size may have changed while connecting
      onOpen: () => ws.send({ type: "resize", cols: term.cols, rows: term.rows }),
      // typed once the shell has shown its prompt
      onOutput: () => {
        if (!run) return;
        ws.send({ type: "input", data: `${run}\r` });
        run = "";
      },
    });
    const input = term.onData((data) => ws.send({ type: "input", data }));
    const resize = term.onResize(({ cols, rows }) => ws.send({ type: "resize", cols, rows }));
    return () => {
      input.dispose();
      resize.dispose();
      ws.close();
    };
  }, extra);
}

export function watch({ view, args, query }) {
  const id = args[0] ?? "";
  // ?type=1 when the share lets this user type; the server checks that on every message
  const typing = query.get("type") === "1";
  const back = { href: "#/sessions", label: "Live sessions" };
  const title = `watching ${id}${typing ? " (you may type)" : " (read-only)"}`;
  return fullWindow(view, title, back, !typing, (term, setStatus) => {
    const ws = stream(term, setStatus, `/sessions/${encodeURIComponent(id)}/watch`);
    const input = typing ? term.onData((data) => ws.send({ type: "input", data })) : null;
    return () => {
      input?.dispose();
      ws.close();
    };
  });
}
