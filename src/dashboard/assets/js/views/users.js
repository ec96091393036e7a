import { api } from '../api.js';
import { h, show, roleBadge, utc, field, alertBox, announce } from '../dom.js';
import { refusalNote } from './overview.js';
import { resetTokenDialog, deleteDialog } from './user.js';

const COLUMNS = ['Permission Level', 'Email', 'Token Key', 'Created At (UTC)'];

export async function usersView(ctx, role) {
  if (!ctx.can('listUsers')) {
    show(h('h1', null, 'Users'), refusalNote(ctx, 'list the users of the organisation'));
    return;
  }
  const error = alertBox();
  const select = h('select', null, h('option', { value: '' }, 'All roles'),
    ctx.catalogue.map((r) => h('option', { value: r.name }, r.name)));
  select.value = role;
  const [roleField] = field('Filter by role', select);
  const search = h('input', { type: 'search', autocomplete: 'off' });
  const [searchField] = field('Search by email', search);
  const tbody = h('tbody');
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  const actions = ctx.can('resetUserToken') || ctx.can('deleteUser');
  const table = h('table', { class: 'responsive' },
    h('caption', { class: 'sr-only' }, 'Users of the organisation'),
    h('thead', null, h('tr', null, COLUMNS.map((c) => h('th', { scope: 'col' }, c)),
      actions ? h('th', { scope: 'col' }, 'Actions') : null)),
    tbody);
  let users = [];

  const render = () => {
    const q = search.value.trim().toLowerCase();
    const shown = users.filter((u) => !q || u.email.toLowerCase().includes(q));
    tbody.replaceChildren(...shown.map((u) => row(ctx, u, load)));
    count.textContent = `${shown.length} of ${users.length} users shown`;
  };
  async function load() {
    error.textContent = '';
    try {
      users = await api.users(select.value);
    } catch (e) {
      error.textContent = e.message;
      users = [];
    }
    render();
  }
  select.addEventListener('change', () => {
    const r = select.value;
    history.replaceState(null, '', r ? `#/users?role=${encodeURIComponent(r)}` : '#/users');
    load();
  });
  search.addEventListener('input', render);

  const top = [];
  if (ctx.can('inviteUser')) top.push(h('a', { class: 'button', href: '#/invite' }, 'Invite New User'));
  show(
    h('h1', null, 'User Management'),
    top.length ? h('div', { class: 'actions' }, top) : null,
    ctx.can('editUserRole') ? null : h('p', { class: 'note' },
      `You see this list read-only: your role, ${ctx.session.permission}, may not change users.`),
    h('div', { class: 'row' }, roleField, searchField),
    error, count, h('div', { class: 'table-wrap' }, table),
  );
  await load();
}

function row(ctx, u, reload) {
  const cells = [
    h('td', { 'data-label': COLUMNS[0] }, roleBadge(u.permission)),
    h('td', { 'data-label': COLUMNS[1] }, h('a', { href: `#/users/${encodeURIComponent(u.id)}` }, u.email)),
    h('td', { 'data-label': COLUMNS[2], class: 'mono' }, u.tokenKey),
    h('td', { 'data-label': COLUMNS[3] }, utc(u.createdAt)),
  ];
  if (ctx.can('resetUserToken') || ctx.can('deleteUser')) {
    const quick = h('div', { class: 'actions' });
    if (ctx.can('resetUserToken')) {
      quick.append(h('button', { type: 'button', class: 'small secondary', 'aria-label': `Reset User Token of ${u.email}`,
        onclick: () => resetTokenDialog(u, async () => { announce(`Token of ${u.email} reset`); await reload(); }) }, 'Reset User Token'));
    }
    if (ctx.can('deleteUser')) {
      quick.append(h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete User ${u.email}`,
        onclick: () => deleteDialog(u, async () => { announce(`${u.email} deleted`); await reload(); }) }, 'Delete User'));
    }
    cells.push(h('td', { 'data-label': 'Actions' }, quick));
  }
  return h('tr', null, cells);
}
