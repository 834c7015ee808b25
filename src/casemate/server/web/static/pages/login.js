// Log in: username, password and (when enrolled) a TOTP code for a session token; or through
// the OpenID provider when one is configured (docs/sso.md). The provider sends the browser
// back to /api/v1/auth/oidc/callback, which passes code and state here in the URL fragment;
// this page finishes the login and removes them from the address bar and history.

import { api, session } from "../api.js";
import { h, notice, replace } from "../dom.js";

export function login({ view, go, query }) {
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
  const sso = h("div", { class: "sso" });
  let oidcState = null; // a provider login waiting for the TOTP code

  function loggedIn(result) {
    session.save(result.token, result.user);
    password.value = "";
    go("#/clusters");
  }

  async function finishOidc(body) {
    try {
      loggedIn(await api("/auth/oidc/finish", { method: "POST", body }));
    } catch (e) {
      if (e.message === "TOTP code missing") {
        oidcState = body.state;
        username.required = password.required = false;
        replace(status, notice("info", "Enter your TOTP code to finish the login."));
        totp.focus();
      } else {
        oidcState = null;
        replace(status, notice("error", e.message));
      }
    }
  }

  async function onsubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    replace(status);
    try {
      if (oidcState) {
        await finishOidc({ state: oidcState, totp: totp.value.trim() });
        return;
      }
      const body = { username: username.value.trim(), password: password.value };
      if (totp.value.trim()) body.totp = totp.value.trim();
      loggedIn(await api("/auth/login", { method: "POST", body }));
    } catch (e) {
      replace(status, notice("error", e.message));
      password.select();
    } finally {
      submit.disabled = false;
    }
  }

  async function startOidc() {
    try {
      const { authorization_url } = await api("/auth/oidc/start", { method: "POST" });
      location.assign(authorization_url);
    } catch (e) {
      replace(status, notice("error", e.message));
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
      sso,
      status,
    ),
  );
  username.focus();

  api("/auth/oidc")
    .then((info) => {
      if (info.enabled) {
        const label = `Log in with ${info.provider}`;
        replace(sso, h("button", { type: "button", onclick: startOidc }, label));
      }
    })
    .catch(() => {});

  const state = query?.get("oidc_state");
  const code = query?.get("oidc_code");
  const error = query?.get("oidc_error");
  if (state || error) {
    history.replaceState(null, "", "#/login"); // code and state leave the address bar
    if (error) replace(status, notice("error", `The sign-on provider refused: ${error}`));
    else finishOidc({ state, code });
  }
}
