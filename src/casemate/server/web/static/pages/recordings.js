// Session recordings (GET /recordings) with Play (asciinema-player on the downloaded asciicast)
// and Download. Both fetch /recordings/<id>/download with the Bearer token; the server audits
// every download.

import { api, session } from "../api.js";
import { bytes, field, h, notice, replace, table, when } from "../dom.js";
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

const FILTERS = [
  ["user", "User"],
  ["cluster", "Cluster"],
  ["command", "Ran a command containing"],
];

export function recordings({ view, query }) {
  const status = h("div", { "aria-live": "polite" });
  const body = h("div", {}, notice("info", "Loading…"));
  const everyone = session.has("auditor");
  const inputs = Object.fromEntries(
    FILTERS.map(([name]) => [name, h("input", { name, maxlength: 200, value: query.get(name) ?? "" })]),
  );
  if (!everyone) inputs.user.disabled = true;
  const since = h("input", { name: "since", type: "datetime-local" });
  const until = h("input", { name: "until", type: "datetime-local" });
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        load();
      },
    },
    FILTERS.map(([name, label]) => field(label, inputs[name])),
    field("Started after", since),
    field("Started before", until),
    h("button", { type: "submit" }, "Search"),
  );
  replace(view, h("h1", {}, "Recordings"), form, status, body);

  function params() {
    const p = new URLSearchParams({ limit: "200" });
    for (const [name] of FILTERS) {
      const value = inputs[name].value.trim();
      if (value && !inputs[name].disabled) p.set(name, value);
    }
    for (const [name, input] of [["since", since], ["until", until]]) {
      const date = input.value ? new Date(input.value) : null;
      if (date && !Number.isNaN(date.getTime())) p.set(name, date.toISOString());
    }
    return p;
  }

  const load = () => api(`/recordings?${params()}`)
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
  load();
}

function clock(seconds) {
  const s = Math.floor(seconds);
  const mm = String(Math.floor(s / 60)).padStart(2, "0");
  return `${mm}:${String(s % 60).padStart(2, "0")}`;
}

export function play({ view, args }) {
  const id = args[0] ?? "";
  const status = h("div", { "aria-live": "polite" }, notice("info", "Loading the recording…"));
  const stage = h("div", { class: "player" });
  const commands = h("ol", { class: "commands", "aria-label": "Commands" });
  const back = h("a", { href: "#/recordings" }, "← Recordings");
  const heading = h("div", { class: "heading" }, back, h("h1", {}, `Recording ${id}`));
  replace(view, heading, status, h("div", { class: "replay" }, stage, commands));
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
        fit: "both",
      });
      const list = await api(`/recordings/${encodeURIComponent(id)}/commands`).catch(() => []);
      if (closed) return;
      replace(
        commands,
        list.map((c) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                class: "jump",
                title: `${c.decision} (${c.rule_id})`,
                onclick: async () => {
                  await player.seek(c.at);
                  player.play();
                },
              },
              h("span", { class: "at" }, clock(c.at)),
              " ",
              c.line,
            ),
          ),
        ),
      );
    } catch (e) {
      if (!closed) replace(status, notice("error", e.message));
    }
  })();

  return () => {
    closed = true;
    player?.dispose();
  };
}
