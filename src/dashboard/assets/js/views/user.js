import { api } from '../api.js';
import { h, show, roleBadge, utc, permissionList, alertBox, announce, field } from '../dom.js';
import { openDialog } from '../dialog.js';
import { refusalNote } from './overview.js';

const PLAYBACK_NOTE =
  'Playback tokens issued by this user remain valid until their expiration date.';

/** What a user gains and loses moving from role `from` to role `to`. */
export function roleDiff(from, to) {
  const a = new Set(from.permissions);
  const b = new Set(to.permissions);
  return {
    gains: to.permissions.filter((p) => !a.has(p)),
    loses: from.permissions.filter((p) => !b.has(p)),
    keeps: from.permissions.filter((p) => b.has(p)),
  };
}

export function resetTokenDialog(user, done) {
  openDialog({
    title: 'Reset User Token',
    body: [
      h('p', null, 'This invalidates all active bintu (API) tokens of ', h('strong', null, user.email),
        ': their tokenKey is renewed and every request with an earlier token is refused from now on.'),
      h('div', { class: 'warn' }, h('strong', null, 'Important: '), PLAYBACK_NOTE),
    ],
    confirm: 'Confirm',
    run: async () => {
      await api.resetToken(user.id);
      await done();
    },
  });
}

export function deleteDialog(user, done) {
  openDialog({
    title: 'Delete User',
    body: [
      h('p', null, 'Delete ', h('strong', null, user.email), ' from the organisation? This cannot be undone.'),
      h('div', { class: 'warn' }, h('strong', null, 'Important: '),
        'This action will invalidate all existing bintu tokens for this user. ', PLAYBACK_NOTE),
    ],
    confirm: 'Delete User',
    danger: true,
    typed: user.email,
    run: async () => {
      await api.deleteUser(user.id);
      await done();
    },
  });
}

function updatePermissionDialog(ctx, user, done) {
  const current = user.role;
  const others = ctx.catalogue.filter((r) => r.name !== current.name);
  const select = h('select', null, h('option', { value: '' }, 'Choose a role'),
    others.map((r) => h('option', { value: r.name }, `${r.name}${r.title ? ` (${r.title})` : ''}`)));
  const [selectField] = field('New role', select);
  const diffBox = h('div', { 'aria-live': 'polite' });
  let dlg = null;
  const renderDiff = () => {
    const to = ctx.catalogue.find((r) => r.name === select.value);
    if (!to) {
      diffBox.replaceChildren();
    } else {
      const d = roleDiff(current, to);
      diffBox.replaceChildren(
        to.description ? h('p', null, to.description) : null,
        h('div', { class: 'diff' },
          h('section', { 'aria-label': 'Gains' }, h('h3', null, `Gains (${d.gains.length})`), permissionList(d.gains, 'gain')),
          h('section', { 'aria-label': 'Loses' }, h('h3', null, `Loses (${d.loses.length})`), permissionList(d.loses, 'lose'))),
        h('details', null, h('summary', null, `Keeps (${d.keeps.length})`), permissionList(d.keeps)));
    }
    if (dlg) dlg.refresh();
  };
  select.addEventListener('change', renderDiff);
  dlg = openDialog({
    title: 'Update Permission',
    body: [
      h('p', null, 'Change the role of ', h('strong', null, user.email), ' from ', roleBadge(current.name), '.'),
      selectField, diffBox,
      h('div', { class: 'warn' }, h('strong', null, 'Important: '),
        'The change takes effect immediately. All API (bintu) tokens of this user stop working at once; ',
        PLAYBACK_NOTE),
    ],
    confirm: 'Confirm',
    ready: () => select.value !== '',
    run: async () => {
      await api.setRole(user.id, select.value);
      await done(select.value);
    },
  });
}

function passwordResetDialog(user) {
  const out = h('div');
  openDialog({
    title: 'Password reset link',
    body: [
      h('p', null, 'Create a single-use link with which ', h('strong', null, user.email),
        ' sets a new password. rolegate sends no email: hand the link over yourself, by a channel you trust.'),
      h('div', { class: 'warn' }, 'Setting the new password also renews their tokenKey: every API token they hold stops working.'),
      out,
    ],
    confirm: 'Create link',
    run: async () => {
      const data = await api.passwordReset(user.id);
      const link = `${window.location.origin}${window.location.pathname}#/reset/${encodeURIComponent(data.token)}`;
      showOnce('Password reset link', link,
        `Valid until ${utc(new Date(data.expiresAt * 1000).toISOString())}, once. It is shown only now.`);
    },
  });
}

/** A secret shown once, with a copy button. */
export function showOnce(title, value, note) {
  const input = h('input', { readonly: true, class: 'mono', value });
  const [valueField] = field('Link', input);
  const copied = h('span', { 'aria-live': 'polite', class: 'muted' });
  const copy = h('button', { type: 'button', class: 'secondary' }, 'Copy link');
  copy.addEventListener('click', async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(value);
      copied.textContent = 'Copied.';
    } catch {
      copied.textContent = 'Copy with Ctrl+C: the link is selected.';
    }
  });
  openDialog({
    title,
    body: [valueField, h('div', { class: 'actions' }, copy, copied), h('p', { class: 'warn' }, note)],
    confirm: 'Done',
    run: async () => {},
  });
}

export async function userView(ctx, id) {
  if (!ctx.can('getUser')) {
    show(h('h1', null, 'User'), refusalNote(ctx, 'read a user'));
    return;
  }
  const error = alertBox();
  let user;
  try {
    user = await api.user(id);
  } catch (e) {
    show(h('h1', null, 'User'), h('div', { class: 'alert', role: 'alert' }, e.message),
      h('p', null, h('a', { href: '#/users' }, 'Back to the user list')));
    return;
  }
  const role = user.role;
  const buttons = [];
  const back = () => { window.location.hash = '#/users'; };
  if (ctx.can('editUserRole')) {
    buttons.push(h('button', { type: 'button', onclick: () => updatePermissionDialog(ctx, user, async (to) => {
      announce(`${user.email} is now ${to}`);
      await userView(ctx, id);
    }) }, 'Update Permission'));
  }
  if (ctx.can('resetUserToken')) {
    buttons.push(h('button', { type: 'button', class: 'secondary', onclick: () => resetTokenDialog(user, async () => {
      announce('Token reset');
      await userView(ctx, id);
    }) }, 'Reset User Token'));
  }
  if (ctx.can('createPasswordReset')) {
    buttons.push(h('button', { type: 'button', class: 'secondary', onclick: () => passwordResetDialog(user) }, 'Password reset link'));
  }
  if (ctx.can('deleteUser')) {
    buttons.push(h('button', { type: 'button', class: 'danger', onclick: () => deleteDialog(user, async () => {
      announce(`${user.email} deleted`);
      back();
    }) }, 'Delete User'));
  }
  show(
    h('p', null, h('a', { href: '#/users' }, '← All users')),
    h('h1', null, 'User overview'),
    buttons.length ? h('div', { class: 'actions' }, buttons) : null,
    error,
    h('div', { class: 'panel' }, h('dl', { class: 'details' },
      h('dt', null, 'Permission Level'), h('dd', { 'data-field': 'permission' }, roleBadge(user.permission)),
      h('dt', null, 'Email'), h('dd', { 'data-field': 'email' }, user.email),
      h('dt', null, 'User ID'), h('dd', { class: 'mono' }, user.id),
      h('dt', null, 'Created At'), h('dd', null, utc(user.createdAt)),
      h('dt', null, 'Token Key'), h('dd', { class: 'mono', 'data-field': 'tokenKey' }, user.tokenKey))),
    h('h2', null, 'Assigned role'),
    h('div', { class: 'panel' }, h('dl', { class: 'details' },
      h('dt', null, 'Role'), h('dd', null, roleBadge(role.name), role.title ? ` ${role.title}` : ''),
      h('dt', null, 'Description'), h('dd', { 'data-field': 'description' }, role.description || '—'),
      h('dt', null, 'Audiences'), h('dd', null, (role.audiences || []).join(', ') || '—'))),
    h('details', { class: 'panel' }, h('summary', null, `Permission Overview (${role.permissions.length} actions)`),
      permissionList(role.permissions)),
  );
}
