import { api } from '../api.js';
import { h, show, field, alertBox } from '../dom.js';
import { refusalNote } from './overview.js';

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD'];

/** Ask the live policies a question, as `rolegate explain` does. */
export async function playgroundView(ctx) {
  if (!ctx.can('explainDecision')) {
    show(h('h1', null, 'Policy playground'), refusalNote(ctx, 'use the policy playground'));
    return;
  }
  const users = ctx.can('listUsers') ? await api.users().catch(() => []) : [];
  const who = h('select', null,
    h('optgroup', { label: 'Roles' }, ctx.catalogue.map((r) => h('option', { value: `role:${r.name}` }, r.name))),
    h('optgroup', { label: 'Users' }, users.map((u) => h('option', { value: `user:${u.id}` }, `${u.email} (${u.permission})`))));
  const method = h('select', null, METHODS.map((m) => h('option', { value: m }, m)));
  const path = h('input', { type: 'text', value: '/stream', autocomplete: 'off', spellcheck: 'false' });
  const [whoField] = field('Caller', who);
  const [methodField] = field('Method', method);
  const [pathField] = field('Path', path);
  const error = alertBox();
  const result = h('div', { 'aria-live': 'polite' });
  const ask = h('button', { type: 'submit' }, 'Explain');
  const form = h('form', null, h('div', { class: 'row' }, whoField, methodField, pathField), error,
    h('div', { class: 'actions' }, ask));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const [kind, value] = [who.value.slice(0, who.value.indexOf(':')), who.value.slice(who.value.indexOf(':') + 1)];
    const q = { method: method.value, path: path.value };
    if (kind === 'role') q.role = value; else q.userId = value;
    try {
      const d = await api.explain(q);
      result.replaceChildren(h('div', { class: 'panel' }, h('dl', { class: 'details' },
        h('dt', null, 'Decision'), h('dd', { class: d.allowed ? 'decision-allow' : 'decision-deny', 'data-field': 'decision' },
          d.allowed ? 'allow' : 'deny'),
        h('dt', null, 'Route'), h('dd', { class: 'mono' }, d.route || 'no route matches: denied'),
        h('dt', null, 'Action'), h('dd', { class: 'mono' }, d.action || '—'),
        h('dt', null, 'Resource'), h('dd', { class: 'mono' }, d.resource || '—'),
        h('dt', null, 'Determining policies'), h('dd', { class: 'mono', 'data-field': 'policies' },
          (d.policies || []).join(', ') || 'none (no permit matched)'),
        h('dt', null, 'Explanation'), h('dd', null, d.explanation || ''))));
    } catch (err) {
      error.textContent = err.message;
    }
  });
  show(h('h1', null, 'Policy playground'),
    h('p', null, 'Pick a caller, a method and a path to see what the live policies decide, which route and action the request ' +
      'matches and which policies determine the answer (the same decision as rolegate explain). Nothing is sent upstream.'),
    form, result);
}
