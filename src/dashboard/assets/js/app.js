// The dashboard's shell: the router (hash routes, so links that carry a
// secret — invite and reset links — keep it in the fragment, which browsers
// never send to a server), the navigation and what the signed-in role may do.

import { api, session, signOut, ApiError } from './api.js';
import { h, show, announce } from './dom.js';
import { loginView } from './views/login.js';
import { overviewView } from './views/overview.js';
import { usersView } from './views/users.js';
import { userView } from './views/user.js';
import { inviteView } from './views/invite.js';
import { acceptView } from './views/accept.js';
import { resetView } from './views/reset.js';
import { auditView } from './views/audit.js';
import { playgroundView } from './views/playground.js';

/**
 * What the signed-in user may do, from the live role catalogue: the actions
 * the policies grant their role. A role that may not read the catalogue gets
 * an empty set and the pages say why. The server enforces everything anyway;
 * this only decides which controls are offered.
 */
async function loadContext(s) {
  let catalogue = null;
  let catalogueError = null;
  try {
    catalogue = await api.roles();
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 403) throw e;
    catalogueError = e;
  }
  const own = catalogue ? catalogue.find((r) => r.name === s.permission) : null;
  const caps = new Set(own ? own.permissions : []);
  return { session: s, catalogue, catalogueError, caps, can: (a) => caps.has(a) };
}

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return '';
    }
  });
  return { parts, query: new URLSearchParams(query || '') };
}

function renderNav(ctx, current) {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  nav.replaceChildren();
  who.replaceChildren();
  if (!ctx) return;
  const link = (href, label, key) =>
    h('a', { href, 'aria-current': key === current ? 'page' : false }, label);
  nav.append(link('#/overview', 'Organisation', 'overview'));
  if (ctx.can('listUsers')) nav.append(link('#/users', 'Users', 'users'));
  if (ctx.can('inviteUser')) nav.append(link('#/invite', 'Invite New User', 'invite'));
  if (ctx.can('readAudit')) nav.append(link('#/audit', 'Audit', 'audit'));
  if (ctx.can('explainDecision')) nav.append(link('#/playground', 'Policy playground', 'playground'));
  const out = h('button', { type: 'button', class: 'small secondary' }, 'Sign out');
  out.addEventListener('click', () => {
    signOut();
    window.location.hash = '#/login';
  });
  who.append(h('span', null, ctx.session.email || ''), h('span', { class: 'role' }, ctx.session.permission), out);
}

const PUBLIC = { accept: acceptView, reset: resetView, login: loginView };

async function route() {
  const { parts, query } = parseHash();
  const page = parts[0] || '';
  if (page === 'accept' || page === 'reset') {
    renderNav(null);
    PUBLIC[page](parts[1] || '');
    return;
  }
  const s = session();
  if (!s || page === 'login') {
    renderNav(null);
    loginView(query.get('email') || '');
    return;
  }
  let ctx;
  try {
    ctx = await loadContext(s);
  } catch (e) {
    show(h('h1', null, 'User Management'), h('div', { class: 'alert', role: 'alert' }, e.message));
    return;
  }
  const views = {
    overview: () => overviewView(ctx),
    users: () => (parts[1] ? userView(ctx, parts[1]) : usersView(ctx, query.get('role') || '')),
    invite: () => inviteView(ctx),
    audit: () => auditView(ctx, query),
    playground: () => playgroundView(ctx),
  };
  const key = views[page] ? page : 'overview';
  renderNav(ctx, key);
  await views[key]();
}

function safeRoute() {
  route().catch((e) => {
    show(h('h1', null, 'Something went wrong'), h('div', { class: 'alert', role: 'alert' }, e.message));
  });
}

window.addEventListener('hashchange', safeRoute);
window.addEventListener('rolegate:signed-out', () => {
  announce('Your session ended: sign in again.');
  sessionStorage.setItem('rolegate.ended', '1');
  // Changing the hash renders the sign-in page; if it is already there, render it again.
  if (window.location.hash === '#/login') safeRoute();
  else window.location.hash = '#/login';
});
safeRoute();
