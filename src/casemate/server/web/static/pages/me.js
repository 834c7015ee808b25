// Self-service: my account, change my password, enrol TOTP with a QR code (drawn by the server
// as SVG path data, built here with createElementNS: no markup is parsed), my API tokens, my SSH
// keys, my grants and my bastion sessions (open and recent, with their replays).

import { api, session } from "../api.js";
import { field, h, notice, replace, svg, table, when } from "../dom.js";

const enc = encodeURIComponent;

function qrImage(size, path) {
  return svg(
    "svg",
    {
      viewBox: `0 0 ${size} ${size}`,
      width: size * 5,
      height: size * 5,
      class: "qr",
      role: "img",
      "aria-label": "TOTP enrolment QR code",
      "shape-rendering": "crispEdges",
    },
    svg("rect", { x: 0, y: 0, width: size, height: size, fill: "#fff" }),
    svg("path", { d: path, stroke: "#000", "stroke-width": 1, fill: "none" }),
  );
}

export function me({ view }) {
  const user = session.user;
  const status = h("div", { "aria-live": "polite" });
  const account = h("div", {});
  const totpBox = h("div", { class: "totp" });
  const tokenBody = h("div", {});
  const grantBody = h("div", {});
  const issued = h("div", { "aria-live": "polite" });
  const keyBody = h("div", {});
  const keysPath = `/users/${enc(user.username)}/ssh-keys`;
  const keyText = h("textarea", {
    name: "public-key",
    rows: 3,
    class: "code",
    placeholder: "ssh-ed25519 AAAA… you@laptop",
    required: true,
  });
  const keyForm = h(
    "form",
    {
      class: "stack ssh-key",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const k = await api(keysPath, { method: "POST", body: { public_key: keyText.value.trim() } });
          say("ok", `SSH key ${k.fingerprint} added.`);
          keyForm.reset();
          load();
        } catch (err) {
          say("error", err.message);
        }
      },
    },
    field("Public key (one OpenSSH line)", keyText),
    h("button", { type: "submit" }, "Add SSH key"),
  );

  function say(kind, text) {
    replace(status, notice(kind, text));
  }

  // Password ----------------------------------------------------------------------------------
  const oldPassword = h("input", { type: "password", name: "old", autocomplete: "current-password" });
  const newPassword = h("input", { type: "password", name: "new", autocomplete: "new-password" });
  const passwordForm = h(
    "form",
    {
      class: "stack password",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api(`/users/${enc(user.username)}/password`, {
            method: "POST",
            body: { old_password: oldPassword.value, new_password: newPassword.value },
            checksPassword: true, // a wrong current password is a 401 that keeps the login
          });
          passwordForm.reset();
          say("ok", "Password changed.");
        } catch (e) {
          say("error", e.message);
        }
      },
    },
    field("Current password", oldPassword),
    field("New password", newPassword),
    h("button", { type: "submit" }, "Change password"),
  );

  // TOTP ------------------------------------------------------------------------------------
  async function enrol() {
    try {
      const e = await api("/auth/totp", { method: "POST" });
      const code = h("input", {
        name: "code",
        inputmode: "numeric",
        autocomplete: "one-time-code",
        maxlength: 16,
        required: true,
      });
      const confirm = h(
        "form",
        {
          class: "stack",
          onsubmit: async (event) => {
            event.preventDefault();
            try {
              await api("/auth/totp/confirm", { method: "POST", body: { code: code.value.trim() } });
              say("ok", "TOTP is on: your next login asks for a code.");
              load();
            } catch (err) {
              say("error", err.message);
            }
          },
        },
        field("Code from the app", code),
        h("button", { type: "submit" }, "Turn TOTP on"),
      );
      replace(
        totpBox,
        h("p", {}, "Scan this with an authenticator app, then enter the code it shows."),
        qrImage(e.qr_size, e.qr_path),
        h("p", { class: "muted" }, "Or type the secret: ", h("code", { class: "secret" }, e.secret)),
        confirm,
      );
      code.focus();
    } catch (err) {
      say("error", err.message);
    }
  }

  async function disable() {
    try {
      await api("/auth/totp", { method: "DELETE" });
      say("ok", "TOTP is off.");
      load();
    } catch (err) {
      say("error", err.message);
    }
  }

  // Tokens ----------------------------------------------------------------------------------
  const tokenName = h("input", { name: "token-name", maxlength: 100, required: true });
  const tokenScopes = h(
    "select",
    { name: "scopes" },
    h("option", { value: "read" }, "read"),
    h("option", { value: "read,write" }, "read, write"),
    h("option", { value: "read,write,admin" }, "read, write, admin"),
  );
  const tokenDays = h("input", { name: "days", type: "number", min: 1, max: 366, value: 30 });
  const tokenForm = h(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const t = await api("/tokens", {
            method: "POST",
            body: {
              name: tokenName.value.trim(),
              scopes: tokenScopes.value.split(","),
              ttl_seconds: Number(tokenDays.value || 30) * 86400,
            },
          });
          replace(
            issued,
            notice("ok", "Copy the token now; it is not shown again:"),
            h("code", { class: "secret issued" }, t.token),
          );
          tokenForm.reset();
          load();
        } catch (err) {
          say("error", err.message);
        }
      },
    },
    field("Name", tokenName),
    field("Scopes", tokenScopes),
    field("Days", tokenDays),
    h("button", { type: "submit" }, "Issue token"),
  );

  // My sessions: my own bastion sessions, open and recent, each with its replay (GET
  // /recordings?user=me: the server answers only mine unless I am an admin or auditor, who
  // asked for mine). Others' sessions never show here, not even those shared with me.
  const sessionBody = h("div", { class: "my-sessions" }, notice("info", "Loading…"));
  async function loadSessions() {
    try {
      const q = new URLSearchParams({ user: user.username, limit: "20" });
      const recent = (await api(`/recordings?${q}`)).filter((r) => r.user === user.username);
      const rows = recent.map((r) =>
        h(
          "tr",
          { "data-session": r.session_id },
          h("td", {}, h("code", {}, r.session_id)),
          h("td", {}, r.cluster),
          h("td", {}, r.title),
          h("td", {}, when(r.started_at)),
          h("td", {}, r.status === "open" ? "open" : `${r.status} ${when(r.ended_at)}`),
          h(
            "td",
            {},
            h(
              "span",
              { class: "actions" },
              h("a", { class: "button replay", href: `#/play/${enc(r.session_id)}` }, "Replay"),
              r.status === "open" ? h("a", { class: "button", href: "#/sessions" }, "Live sessions") : null,
            ),
          ),
        ),
      );
      replace(
        sessionBody,
        rows.length
          ? table(["Session", "Cluster", "Title", "Started", "State", ""], rows)
          : notice("info", "No bastion sessions yet."),
      );
    } catch (e) {
      replace(sessionBody, notice("error", e.message));
    }
  }

  async function load() {
    try {
      const [u, tokens, grants, keys] = await Promise.all([
        api(`/users/${enc(user.username)}`),
        api("/tokens"),
        api("/grants/mine"),
        api(keysPath),
      ]);
      replace(
        keyBody,
        keys.length
          ? table(
              ["Name", "Type", "Fingerprint", "Added", ""],
              keys.map((k) =>
                h(
                  "tr",
                  { "data-key": k.fingerprint },
                  h("td", {}, k.name),
                  h("td", {}, `${k.algorithm} ${k.bits}`),
                  h("td", {}, h("code", {}, k.fingerprint)),
                  h("td", {}, when(k.created_at)),
                  h(
                    "td",
                    {},
                    h(
                      "button",
                      {
                        class: "danger",
                        onclick: async () => {
                          try {
                            const q = new URLSearchParams({ fingerprint: k.fingerprint });
                            await api(`${keysPath}?${q}`, { method: "DELETE" });
                            say("ok", `SSH key ${k.name} removed.`);
                          } catch (err) {
                            say("error", err.message);
                          }
                          load();
                        },
                      },
                      "Remove",
                    ),
                  ),
                ),
              ),
            )
          : notice("info", "No SSH keys: add one to use ssh to the gateway."),
      );
      replace(
        account,
        h(
          "dl",
          {},
          [
            ["User", u.username],
            ["Name", u.display_name],
            ["Roles", u.effective_roles.join(", ") || "none"],
            ["Groups", u.groups.join(", ") || "none"],
            ["Password changed", when(u.password_changed_at)],
          ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
        ),
      );
      if (u.totp_enabled) {
        replace(
          totpBox,
          h("p", {}, "TOTP is on."),
          h("button", { class: "danger", onclick: disable }, "Turn TOTP off"),
        );
      } else {
        replace(
          totpBox,
          h("p", {}, "TOTP is off: a stolen password is enough to log in as you."),
          h("button", { onclick: enrol }, "Set up TOTP"),
        );
      }
      const rows = tokens.map((t) =>
        h(
          "tr",
          {},
          h("td", {}, t.name),
          h("td", {}, t.prefix),
          h("td", {}, t.scopes.join(", ")),
          h("td", {}, when(t.expires_at)),
          h("td", {}, t.revoked_at ? "revoked" : when(t.last_used_at)),
          h(
            "td",
            {},
            t.revoked_at
              ? ""
              : h(
                  "button",
                  {
                    class: "danger",
                    onclick: async () => {
                      try {
                        await api(`/tokens/${t.id}`, { method: "DELETE" });
                        say("ok", `Token ${t.name} revoked.`);
                      } catch (err) {
                        say("error", err.message);
                      }
                      load();
                    },
                  },
                  "Revoke",
                ),
          ),
        ),
      );
      replace(
        tokenBody,
        rows.length
          ? table(["Name", "Prefix", "Scopes", "Expires", "Last used", ""], rows)
          : notice("info", "No API tokens."),
      );
      replace(
        grantBody,
        grants.length
          ? table(
              ["Cluster", "Account", "Namespaces", "Expires", "State"],
              grants.map((g) =>
                h(
                  "tr",
                  {},
                  h("td", {}, g.cluster),
                  h("td", {}, g.account),
                  h("td", {}, g.namespaces.join(", ")),
                  h("td", {}, g.expires_at ? when(g.expires_at) : "never"),
                  h("td", {}, g.state),
                ),
              ),
            )
          : notice("info", "No grants."),
      );
    } catch (e) {
      say("error", e.message);
    }
  }

  replace(
    view,
    h("h1", {}, "My account"),
    status,
    account,
    h("h2", {}, "Two-factor login (TOTP)"),
    totpBox,
    h("h2", {}, "Password"),
    passwordForm,
    h("h2", {}, "API tokens"),
    tokenForm,
    issued,
    tokenBody,
    h("h2", {}, "SSH keys"),
    keyBody,
    keyForm,
    h("h2", {}, "My grants"),
    grantBody,
    h("h2", {}, "My sessions"),
    sessionBody,
    h("p", {}, h("a", { href: "#/sessions" }, "Live sessions"), " · ", h("a", { href: "#/recordings" }, "My recordings")),
  );
  load();
  loadSessions();
}
