import { api } from '../api.js';
import { h, show, roleBadge } from '../dom.js';

/** Why a role sees less: the server's own refusal, put in words. */
export function refusalNote(ctx, what) {
  return h('div', { class: 'note' },
    `Your role, ${ctx.session.permission}, may not ${what}: the policies deny it, and the server refuses the request. ` +
    'Ask a nanoAdmin of your organisation if you need it.');
}

export async function overviewView(ctx) {
  const org = await api.organisation().catch(() => null);
  const parts = [h('h1', null, 'Organisation overview')];
  const details = h('dl', { class: 'details' },
    h('dt', null, 'Organisation'), h('dd', null, org ? org.name || org.id : ctx.session.orgId || ''),
    h('dt', null, 'Signed in as'), h('dd', null, ctx.session.email || ''),
    h('dt', null, 'Your permission level'), h('dd', null, roleBadge(ctx.session.permission)));
  parts.push(h('div', { class: 'panel' }, details));
  if (!ctx.can('listUsers')) {
    parts.push(refusalNote(ctx, 'list the users of the organisation or read the role catalogue'));
    show(parts);
    return;
  }
  const users = await api.users();
  const counts = new Map(ctx.catalogue.map((r) => [r.name, 0]));
  for (const u of users) counts.set(u.permission, (counts.get(u.permission) || 0) + 1);
  parts.push(h('h2', null, `${users.length} ${users.length === 1 ? 'user' : 'users'}, by role`));
  parts.push(h('div', { class: 'cards' }, [...counts].map(([name, n]) => {
    const meta = ctx.catalogue.find((r) => r.name === name);
    return h('a', { class: 'card', href: `#/users?role=${encodeURIComponent(name)}` },
      h('span', { class: 'count' }, String(n)), roleBadge(name),
      meta && meta.title ? h('span', { class: 'muted' }, ` ${meta.title}`) : null);
  })));
  show(parts);
}
