import { api } from '../api.js';
import { h, show, field, alertBox } from '../dom.js';

const MIN_PASSWORD = 10;

/** The invitee's page: set email and password, join with the invite's role. */
export function acceptView(token) {
  const error = alertBox();
  const [emailField, email] = field('Email', h('input', { type: 'email', autocomplete: 'username', required: true }));
  const [passField, pass] = field(`Password (at least ${MIN_PASSWORD} characters)`,
    h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: MIN_PASSWORD }));
  const submit = h('button', { type: 'submit' }, 'Join the organisation');
  const form = h('form', { novalidate: true }, emailField, passField, error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    if (pass.value.length < MIN_PASSWORD) {
      error.textContent = `The password needs at least ${MIN_PASSWORD} characters.`;
      return;
    }
    submit.disabled = true;
    try {
      const user = await api.acceptInvite(token, email.value, pass.value);
      show(h('h1', null, 'Welcome'),
        h('div', { class: 'ok', role: 'status' }, `You joined the organisation as ${user.permission}.`),
        h('p', null, h('a', { class: 'button', href: `#/login?email=${encodeURIComponent(user.email)}` }, 'Sign in')));
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
    }
  });
  show(h('h1', null, 'Accept your invitation'),
    token ? null : h('div', { class: 'alert', role: 'alert' }, 'This link carries no invite token.'),
    h('p', null, 'Choose the email and password you will sign in with.'), form);
}
