import { api } from '../api.js';
import { h, show, field, alertBox, utc } from '../dom.js';
import { refusalNote } from './overview.js';

const ACTIONS = ['acceptInvite', 'inviteUser', 'editUserRole', 'resetUserToken', 'deleteUser',
  'createPasswordReset', 'resetPassword'];
const COLUMNS = ['When (UTC)', 'Who', 'Action', 'Whom', 'Outcome', 'Detail'];

export async function auditView(ctx, query) {
  if (!ctx.can('readAudit')) {
    show(h('h1', null, 'Audit'), refusalNote(ctx, 'read the audit log'));
    return;
  }
  const users = ctx.can('listUsers') ? await api.users().catch(() => []) : [];
  const emailOf = new Map(users.map((u) => [u.id, u.email]));
  const name = (who) => {
    const id = who.startsWith('user:') ? who.slice(5) : who;
    return emailOf.get(id) || who;
  };
  const userSelect = h('select', null, h('option', { value: '' }, 'Anyone'),
    users.map((u) => h('option', { value: u.id }, u.email)));
  const actionSelect = h('select', null, h('option', { value: '' }, 'Any action'),
    ACTIONS.map((a) => h('option', { value: a }, a)));
  userSelect.value = query.get('user') || '';
  actionSelect.value = query.get('action') || '';
  const [userField] = field('User (who was changed)', userSelect);
  const [actionField] = field('Action', actionSelect);
  const error = alertBox();
  const tbody = h('tbody');
  const table = h('table', { class: 'responsive' },
    h('caption', { class: 'sr-only' }, 'Audit records, newest first'),
    h('thead', null, h('tr', null, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))), tbody);
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  const load = async () => {
    error.textContent = '';
    try {
      const records = await api.audit({ user: userSelect.value, action: actionSelect.value, limit: '500' });
      tbody.replaceChildren(...records.map((r) => h('tr', null,
        h('td', { 'data-label': COLUMNS[0] }, utc(r.at)),
        h('td', { 'data-label': COLUMNS[1] }, name(r.actor)),
        h('td', { 'data-label': COLUMNS[2] }, h('code', null, r.action)),
        h('td', { 'data-label': COLUMNS[3] }, name(r.target)),
        h('td', { 'data-label': COLUMNS[4] }, r.outcome),
        h('td', { 'data-label': COLUMNS[5] }, r.detail))));
      count.textContent = `${records.length} records`;
    } catch (e) {
      error.textContent = e.message;
    }
  };
  const onChange = () => {
    const q = new URLSearchParams();
    if (userSelect.value) q.set('user', userSelect.value);
    if (actionSelect.value) q.set('action', actionSelect.value);
    history.replaceState(null, '', `#/audit${q.toString() ? `?${q}` : ''}`);
    load();
  };
  userSelect.addEventListener('change', onChange);
  actionSelect.addEventListener('change', onChange);
  show(h('h1', null, 'Audit'), h('p', null, 'Who changed whom, and when.'),
    h('div', { class: 'row' }, userField, actionField), error, count, h('div', { class: 'table-wrap' }, table));
  await load();
}
