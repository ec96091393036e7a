import { api } from '../api.js';
import { h, show, field, alertBox } from '../dom.js';

const MIN_PASSWORD = 10;

/** The page a password-reset link opens: set a new password, once. */
export function resetView(token) {
  const error = alertBox();
  const [passField, pass] = field(`New password (at least ${MIN_PASSWORD} characters)`,
    h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: MIN_PASSWORD }));
  const [againField, again] = field('New password, again',
    h('input', { type: 'password', autocomplete: 'new-password', required: true }));
  const submit = h('button', { type: 'submit' }, 'Set password');
  const form = h('form', { novalidate: true }, passField, againField, error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    if (pass.value.length < MIN_PASSWORD) {
      error.textContent = `The password needs at least ${MIN_PASSWORD} characters.`;
      return;
    }
    if (pass.value !== again.value) {
      error.textContent = 'The two passwords differ.';
      return;
    }
    submit.disabled = true;
    try {
      const user = await api.setPassword(token, pass.value);
      show(h('h1', null, 'Password set'),
        h('div', { class: 'ok', role: 'status' },
          'Your new password is set. Every API token you held before has stopped working.'),
        h('p', null, h('a', { class: 'button', href: `#/login?email=${encodeURIComponent(user.email)}` }, 'Sign in')));
    } catch (err) {
      error.textContent = err.message;
      submit.disabled = false;
    }
  });
  show(h('h1', null, 'Set a new password'),
    token ? null : h('div', { class: 'alert', role: 'alert' }, 'This link carries no reset token.'), form);
}
