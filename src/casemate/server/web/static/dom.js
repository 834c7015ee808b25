// Building DOM nodes without parsing HTML: text always goes in as text nodes, so nothing that
// comes from the server or the user can become markup. This module is the only place that
// creates elements; never use innerHTML, outerHTML, insertAdjacentHTML or document.write.

const SAFE_URL = /^(#|\/(?!\/)|blob:)/; // in-page routes, same-origin paths, downloads

/**
 * h("a", { href: "#/x", class: "btn", onclick: fn }, "text", child, [more])
 * Attributes: functions for on* names become listeners; true/false/null toggle or skip;
 * everything else is set with setAttribute (href/src only with a safe URL).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      el.addEventListener(name.slice(2), value);
    } else if ((name === "href" || name === "src") && !SAFE_URL.test(String(value))) {
      throw new TypeError(`refusing ${name}=${String(value)}`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children: nodes as they are, strings and numbers as text, arrays flattened. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all of an element's content. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A message box: kind is "error", "info" or "ok". */
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

export function table(headings, rows) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows),
  );
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Text safe to write into a terminal: no control characters (escape sequences). */
export function plain(text) {
  // eslint-disable-next-line no-control-regex
  return String(text).replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set(["svg", "path", "rect", "title"]);
const SVG_ATTRS = /^(viewBox|width|height|d|x|y|fill|stroke|stroke-width|class|role|aria-label|shape-rendering)$/;

/** An SVG element (only a few drawing tags and attributes: no scripts, links or styles). */
export function svg(tag, attrs = {}, ...children) {
  if (!SVG_TAGS.has(tag)) throw new TypeError(`refusing <${tag}>`);
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (!SVG_ATTRS.test(name)) throw new TypeError(`refusing ${name} on <${tag}>`);
    el.setAttribute(name, String(value));
  }
  return append(el, children);
}

/** A labelled form field: field("Username", input). */
export function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

/** Offer text as a file download (a blob: URL, revoked shortly after). */
export function saveText(name, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Split "a, b c" into ["a", "b", "c"]. */
export function words(text) {
  return String(text)
    .split(/[\s,]+/)
    .filter(Boolean);
}
