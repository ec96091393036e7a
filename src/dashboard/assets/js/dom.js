// Building the page: elements and text nodes only. Server data is only ever
// inserted as text (textContent or a text node), never parsed as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace the view with `children` and move focus to its heading. */
export function show(...children) {
  const main = document.getElementById('main');
  main.replaceChildren();
  append(main, children);
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus();
  }
}

/** Announce a short message to screen readers. */
export function announce(text) {
  const status = document.getElementById('status');
  status.textContent = '';
  window.setTimeout(() => {
    status.textContent = text;
  }, 50);
}

/** An alert region; set its text to show an error. */
export function alertBox() {
  return h('div', { class: 'alert', role: 'alert' });
}

export function roleBadge(name) {
  const safe = /^[A-Za-z0-9_-]+$/.test(name) ? ` role-${name}` : '';
  return h('span', { class: `role${safe}` }, name);
}

/** `2026-11-30T13:51:25Z` → `2026-11-30 13:51:25 UTC`. */
export function utc(rfc3339) {
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return String(rfc3339);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

export function permissionList(perms, cls) {
  if (!perms.length) return h('p', { class: 'muted' }, 'none');
  return h('ul', { class: cls ? `perms ${cls}` : 'perms' }, perms.map((p) => h('li', null, h('code', null, p))));
}

let seq = 0;
/** A labelled field: returns [wrapper, input]. */
export function field(label, input) {
  const id = input.id || `f${++seq}`;
  input.id = id;
  return [h('div', null, h('label', { for: id }, label), input), input];
}
