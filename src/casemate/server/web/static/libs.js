// The vendored browser libraries (scripts/vendor-web writes them; docs/web.md lists them).
// Their versioned paths appear only in this module: update them here after a refresh.

export { Terminal } from "./vendor/xterm-6.0.0/xterm.mjs";
export { FitAddon } from "./vendor/xterm-addon-fit-0.11.0/addon-fit.mjs";

const XTERM_CSS = "/static/vendor/xterm-6.0.0/xterm.css";
const PLAYER_CSS = "/static/vendor/asciinema-player-3.18.0/asciinema-player.css";
const PLAYER_JS = "/static/vendor/asciinema-player-3.18.0/asciinema-player.min.js";

const loaded = new Map();

function once(key, start) {
  if (!loaded.has(key)) loaded.set(key, start());
  return loaded.get(key);
}

function stylesheet(href) {
  return once(href, () => {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    document.head.append(link);
    return new Promise((resolve) => {
      link.addEventListener("load", resolve);
      link.addEventListener("error", resolve); // the page still works, only plainer
    });
  });
}

function classicScript(src) {
  return once(src, () => {
    const script = document.createElement("script");
    script.src = src;
    document.head.append(script);
    return new Promise((resolve, reject) => {
      script.addEventListener("load", resolve);
      script.addEventListener("error", () => reject(new Error(`could not load ${src}`)));
    });
  });
}

/** The xterm.js stylesheet (the terminal pages wait for it before measuring). */
export function xtermStyles() {
  return stylesheet(XTERM_CSS);
}

/** asciinema-player (a classic script defining window.AsciinemaPlayer) and its styles. */
export async function asciinemaPlayer() {
  await Promise.all([stylesheet(PLAYER_CSS), classicScript(PLAYER_JS)]);
  return window.AsciinemaPlayer;
}
