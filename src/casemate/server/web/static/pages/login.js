// Log in: username, password and (when enrolled) a TOTP code for a session token.

import { api, session } from "../api.js";
import { h, notice, replace } from "../dom.js";

export function login({ view, go }) {
  const status = h("div", { "aria-live": "polite" });
  const field = (label, input) => h("label", {}, h("span", {}, label), input);
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const totp = h("input", {
    name: "totp",
    autocomplete: "one-time-code",
    inputmode: "numeric",
    maxlength: 16,
    placeholder: "if enrolled",
  });
  const submit = h("button", { type: "submit" }, "Log in");

  async function onsubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    replace(status);
    try {
      const body = { username: username.value.trim(), password: password.value };
      if (totp.value.trim()) body.totp = totp.value.trim();
      const result = await api("/auth/login", { method: "POST", body });
      session.save(result.token, result.user);
      password.value = "";
      go("#/clusters");
    } catch (e) {
      replace(status, notice("error", e.message));
      password.select();
    } finally {
      submit.disabled = false;
    }
  }

  replace(
    view,
    h(
      "form",
      { class: "login", onsubmit },
      h("h1", {}, "Casemate"),
      field("Username", username),
      field("Password", password),
      field("TOTP code", totp),
      submit,
      status,
    ),
  );
  username.focus();
}
