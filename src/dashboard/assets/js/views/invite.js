import { api } from '../api.js';
import { h, show, field, alertBox, permissionList, utc } from '../dom.js';
import { refusalNote } from './overview.js';
import { showOnce } from './user.js';

export async function inviteView(ctx) {
  if (!ctx.can('inviteUser')) {
    show(h('h1', null, 'Invite New User'), refusalNote(ctx, 'invite users'));
    return;
  }
  const error = alertBox();
  const select = h('select', null, ctx.catalogue.map((r) =>
    h('option', { value: r.name }, `${r.name}${r.title ? ` (${r.title})` : ''}`)));
  const [roleField] = field('Role of the invitee', select);
  const overview = h('div', { class: 'panel', 'aria-live': 'polite' });
  const renderOverview = () => {
    const r = ctx.catalogue.find((x) => x.name === select.value);
    overview.replaceChildren(
      h('h2', null, `Permission overview: ${r.name}`),
      r.description ? h('p', null, r.description) : null,
      h('p', { class: 'muted' }, `Audiences: ${(r.audiences || []).join(', ') || '—'}`),
      permissionList(r.permissions));
  };
  select.addEventListener('change', renderOverview);
  if (ctx.catalogue.some((r) => r.name === 'nanoReadOnly')) select.value = 'nanoReadOnly';
  renderOverview();
  const generate = h('button', { type: 'button' }, 'Generate New Invite Token');
  generate.addEventListener('click', async () => {
    error.textContent = '';
    generate.disabled = true;
    try {
      const data = await api.invite(select.value);
      const link = `${window.location.origin}${window.location.pathname}#/accept/${encodeURIComponent(data.token)}`;
      showOnce('Invite link', link,
        `Anyone with this link can join your organisation as ${data.role}, once, until ` +
        `${utc(new Date(data.expiresAt * 1000).toISOString())}. It is shown only now: copy it and share it with the invitee.`);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      generate.disabled = false;
    }
  });
  show(h('h1', null, 'Invite New User'),
    h('p', null, 'Choose a role, review what it allows, then generate a single-use invite link.'),
    roleField, overview, error, h('div', { class: 'actions' }, generate));
}
