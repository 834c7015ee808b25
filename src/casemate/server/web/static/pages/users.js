// Admin: users and groups (GET/POST/PATCH/DELETE /users, /groups, /tokens?user=). Every
// action calls the same API as `casemate user …`; the server checks the admin role and
// validates; its message is shown as it is.

import { api } from "../api.js";
import { field, h, notice, replace, table, when, words } from "../dom.js";

const ROLES = ["admin", "approver", "auditor", "operator"];
const enc = encodeURIComponent;

function roleBoxes(prefix, selected = []) {
  return ROLES.map((role) =>
    h(
      "label",
      { class: "check" },
      h("input", {
        type: "checkbox",
        name: `${prefix}-${role}`,
        value: role,
        checked: selected.includes(role),
      }),
      role,
    ),
  );
}

function checkedRoles(container) {
  return [...container.querySelectorAll("input[type=checkbox]:checked")].map((b) => b.value);
}

function userState(u) {
  const parts = [];
  if (u.disabled) parts.push("disabled");
  if (u.locked_until && new Date(u.locked_until) > new Date()) {
    parts.push(`locked until ${when(u.locked_until)}`);
  }
  parts.push(u.totp_enabled ? "TOTP on" : "no TOTP");
  return parts.join(", ");
}

export function users({ view }) {
  const status = h("div", { "aria-live": "polite" });
  const userBody = h("div", {}, notice("info", "Loading…"));
  const groupBody = h("div", {});
  const tokenBox = h("div", { class: "panel", hidden: true });

  async function act(what, call) {
    try {
      await call();
      replace(status, notice("ok", what));
    } catch (e) {
      replace(status, notice("error", e.message));
    }
    load();
  }

  // Create a user ---------------------------------------------------------------------------
  const newName = h("input", { name: "username", required: true, maxlength: 64 });
  const newPassword = h("input", { name: "password", type: "password", maxlength: 1024 });
  const newDisplay = h("input", { name: "display_name", maxlength: 200 });
  const newRoles = h("span", { class: "roles" }, roleBoxes("new"));
  const createUser = h(
    "form",
    {
      class: "stack create-user",
      onsubmit: (event) => {
        event.preventDefault();
        const body = {
          username: newName.value.trim(),
          display_name: newDisplay.value,
          roles: checkedRoles(newRoles),
        };
        if (newPassword.value) body.password = newPassword.value;
        act(`User ${body.username} created.`, async () => {
          await api("/users", { method: "POST", body });
          createUser.reset();
        });
      },
    },
    field("Username", newName),
    field("Password (empty: the user cannot log in with one)", newPassword),
    field("Display name", newDisplay),
    field("Roles", newRoles),
    h("button", { type: "submit" }, "Create user"),
  );

  async function showTokens(u) {
    tokenBox.hidden = false;
    replace(tokenBox, notice("info", `Loading ${u.username}'s tokens…`));
    try {
      const tokens = await api(`/tokens?user=${enc(u.username)}`);
      const rows = tokens.map((t) =>
        h(
          "tr",
          {},
          h("td", {}, t.name),
          h("td", {}, t.prefix),
          h("td", {}, t.scopes.join(", ")),
          h("td", {}, when(t.expires_at)),
          h("td", {}, t.revoked_at ? `revoked ${when(t.revoked_at)}` : when(t.last_used_at)),
          h(
            "td",
            {},
            t.revoked_at
              ? ""
              : h(
                  "button",
                  {
                    class: "danger",
                    onclick: () =>
                      act(`Token ${t.name} revoked.`, async () => {
                        await api(`/tokens/${t.id}`, { method: "DELETE" });
                        await showTokens(u);
                      }),
                  },
                  "Revoke",
                ),
          ),
        ),
      );
      replace(
        tokenBox,
        h("h2", {}, `API tokens of ${u.username}`),
        tokens.length
          ? table(["Name", "Prefix", "Scopes", "Expires", "Last used", ""], rows)
          : notice("info", "No tokens."),
      );
    } catch (e) {
      replace(tokenBox, notice("error", e.message));
    }
  }

  async function showKeys(u) {
    tokenBox.hidden = false;
    const path = `/users/${enc(u.username)}/ssh-keys`;
    try {
      const keys = await api(path);
      const rows = keys.map((k) =>
        h(
          "tr",
          {},
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
                onclick: () =>
                  act(`SSH key ${k.name} of ${u.username} removed.`, async () => {
                    const q = new URLSearchParams({ fingerprint: k.fingerprint });
                    await api(`${path}?${q}`, { method: "DELETE" });
                    await showKeys(u);
                  }),
              },
              "Remove",
            ),
          ),
        ),
      );
      replace(
        tokenBox,
        h("h2", {}, `SSH keys of ${u.username}`),
        rows.length
          ? table(["Name", "Type", "Fingerprint", "Added", ""], rows)
          : notice("info", "No SSH keys."),
      );
    } catch (e) {
      replace(tokenBox, notice("error", e.message));
    }
  }

  function userRow(u) {
    const roles = h("span", { class: "roles" }, roleBoxes(`u-${u.id}`, u.roles));
    const path = `/users/${enc(u.username)}`;
    const buttons = [
      h(
        "button",
        {
          onclick: () =>
            act(`Roles of ${u.username} saved.`, () =>
              api(path, { method: "PATCH", body: { roles: checkedRoles(roles) } }),
            ),
        },
        "Save roles",
      ),
      u.disabled
        ? h(
            "button",
            {
              onclick: () =>
                act(`${u.username} enabled.`, () =>
                  api(path, { method: "PATCH", body: { disabled: false } }),
                ),
            },
            "Enable",
          )
        : h(
            "button",
            {
              class: "danger",
              onclick: () =>
                act(`${u.username} disabled.`, () =>
                  api(path, { method: "PATCH", body: { disabled: true } }),
                ),
            },
            "Disable",
          ),
      h(
        "button",
        {
          class: "unlock",
          onclick: () =>
            act(`${u.username} unlocked.`, () => api(`${path}/unlock`, { method: "POST" })),
        },
        "Unlock",
      ),
      u.totp_enabled
        ? h(
            "button",
            {
              class: "reset-totp",
              onclick: () =>
                act(`TOTP of ${u.username} reset.`, () =>
                  api(`${path}/totp`, { method: "DELETE" }),
                ),
            },
            "Reset TOTP",
          )
        : null,
      h(
        "button",
        {
          onclick: () =>
            act(`Login sessions of ${u.username} ended.`, () =>
              api(`${path}/sessions/revoke`, { method: "POST" }),
            ),
        },
        "End logins",
      ),
      h("button", { class: "tokens", onclick: () => showTokens(u) }, "Tokens"),
      h("button", { class: "keys", onclick: () => showKeys(u) }, "SSH keys"),
      h(
        "button",
        {
          class: "danger",
          onclick: () => {
            if (!window.confirm(`Delete user ${u.username}?`)) return;
            act(`${u.username} deleted.`, () => api(path, { method: "DELETE" }));
          },
        },
        "Delete",
      ),
    ];
    return h(
      "tr",
      { "data-user": u.username },
      h("td", {}, h("strong", {}, u.username), h("div", { class: "muted" }, u.display_name)),
      h("td", {}, roles, h("div", { class: "muted" }, `effective: ${u.effective_roles.join(", ") || "none"}`)),
      h("td", {}, u.groups.join(", ")),
      h("td", {}, userState(u)),
      h("td", {}, h("span", { class: "actions" }, buttons)),
    );
  }

  // Groups ----------------------------------------------------------------------------------
  const groupName = h("input", { name: "group", required: true, maxlength: 64 });
  const groupRoles = h("span", { class: "roles" }, roleBoxes("newgroup"));
  const createGroup = h(
    "form",
    {
      class: "stack create-group",
      onsubmit: (event) => {
        event.preventDefault();
        const body = { name: groupName.value.trim(), roles: checkedRoles(groupRoles) };
        act(`Group ${body.name} created.`, async () => {
          await api("/groups", { method: "POST", body });
          createGroup.reset();
        });
      },
    },
    field("Group", groupName),
    field("Roles", groupRoles),
    h("button", { type: "submit" }, "Create group"),
  );

  function groupRow(g) {
    const path = `/groups/${enc(g.name)}`;
    const roles = h("span", { class: "roles" }, roleBoxes(`g-${g.id}`, g.roles));
    const member = h("input", { placeholder: "username", "aria-label": "Member", maxlength: 64 });
    const members = g.members.map((m) =>
      h(
        "span",
        { class: "chip" },
        m,
        h(
          "button",
          {
            title: `Remove ${m}`,
            "aria-label": `Remove ${m}`,
            onclick: () =>
              act(`${m} removed from ${g.name}.`, () =>
                api(`${path}/members/${enc(m)}`, { method: "DELETE" }),
              ),
          },
          "×",
        ),
      ),
    );
    return h(
      "tr",
      { "data-group": g.name },
      h("td", {}, h("strong", {}, g.name), h("div", { class: "muted" }, g.description)),
      h("td", {}, roles),
      h(
        "td",
        {},
        members,
        h(
          "form",
          {
            class: "inline",
            onsubmit: (event) => {
              event.preventDefault();
              for (const name of words(member.value)) {
                act(`${name} added to ${g.name}.`, () =>
                  api(`${path}/members/${enc(name)}`, { method: "PUT" }),
                );
              }
            },
          },
          member,
          h("button", { type: "submit" }, "Add"),
        ),
      ),
      h(
        "td",
        {},
        h(
          "span",
          { class: "actions" },
          h(
            "button",
            {
              onclick: () =>
                act(`Roles of ${g.name} saved.`, () =>
                  api(path, { method: "PATCH", body: { roles: checkedRoles(roles) } }),
                ),
            },
            "Save roles",
          ),
          h(
            "button",
            {
              class: "danger",
              onclick: () => {
                if (!window.confirm(`Delete group ${g.name}?`)) return;
                act(`Group ${g.name} deleted.`, () => api(path, { method: "DELETE" }));
              },
            },
            "Delete",
          ),
        ),
      ),
    );
  }

  async function load() {
    try {
      const [userList, groupList] = await Promise.all([api("/users"), api("/groups")]);
      replace(
        userBody,
        table(["User", "Roles", "Groups", "State", ""], userList.map(userRow)),
      );
      replace(
        groupBody,
        groupList.length
          ? table(["Group", "Roles", "Members", ""], groupList.map(groupRow))
          : notice("info", "No groups yet."),
      );
    } catch (e) {
      replace(userBody, notice("error", e.message));
    }
  }

  replace(
    view,
    h("h1", {}, "Users and groups"),
    status,
    userBody,
    h("details", {}, h("summary", {}, "New user"), createUser),
    tokenBox,
    h("h2", {}, "Groups"),
    groupBody,
    h("details", {}, h("summary", {}, "New group"), createGroup),
  );
  load();
}
