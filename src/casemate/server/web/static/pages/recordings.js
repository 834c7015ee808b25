// Session recordings (GET /recordings) with Play (asciinema-player on the downloaded asciicast)
// and Download. Both fetch /recordings/<id>/download with the Bearer token; the server audits
// every download.

import { api } from "../api.js";
import { bytes, h, notice, replace, table, when } from "../dom.js";
import { asciinemaPlayer } from "../libs.js";

function downloadPath(id) {
  return `/recordings/${encodeURIComponent(id)}/download`;
}

async function download(rec, status) {
  try {
    const response = await api(downloadPath(rec.session_id), { raw: true });
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: `${rec.session_id}.cast` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (e) {
    replace(status, notice("error", e.message));
  }
}

export function recordings({ view }) {
  const status = h("div", { "aria-live": "polite" });
  const body = h("div", {}, notice("info", "Loading…"));
  replace(view, h("h1", {}, "Recordings"), status, body);

  api("/recordings?limit=200")
    .then((list) => {
      if (list.length === 0) {
        replace(body, notice("info", "No recordings."));
        return;
      }
      const rows = list.map((r) => {
        const href = `#/play/${encodeURIComponent(r.session_id)}`;
        return h(
          "tr",
          {},
          h("td", {}, when(r.started_at)),
          h("td", {}, r.user),
          h("td", {}, r.account ? `${r.cluster} (${r.account})` : r.cluster),
          h("td", {}, r.title),
          h("td", {}, r.status),
          h("td", { class: "num" }, bytes(r.size)),
          h(
            "td",
            {},
            h(
              "span",
              { class: "actions" },
              h("a", { class: "button", href }, "Play"),
              h("button", { onclick: () => download(r, status) }, "Download"),
            ),
          ),
        );
      });
      replace(body, table(["Started", "User", "Cluster", "Title", "Status", "Size", ""], rows));
    })
    .catch((e) => replace(body, notice("error", e.message)));
}

export function play({ view, args }) {
  const id = args[0] ?? "";
  const status = h("div", { "aria-live": "polite" }, notice("info", "Loading the recording…"));
  const stage = h("div", { class: "player" });
  const back = h("a", { href: "#/recordings" }, "← Recordings");
  const heading = h("div", { class: "heading" }, back, h("h1", {}, `Recording ${id}`));
  replace(view, heading, status, stage);
  let player = null;
  let closed = false;

  (async () => {
    try {
      const [response, AsciinemaPlayer] = await Promise.all([
        api(downloadPath(id), { raw: true }),
        asciinemaPlayer(),
      ]);
      const cast = await response.text();
      if (closed) return;
      replace(status);
      player = AsciinemaPlayer.create({ data: cast }, stage, {
        autoPlay: true,
        fit: "width",
        idleTimeLimit: 2,
      });
    } catch (e) {
      if (!closed) replace(status, notice("error", e.message));
    }
  })();

  return () => {
    closed = true;
    player?.dispose();
  };
}
