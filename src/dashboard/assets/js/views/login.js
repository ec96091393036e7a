import { api, signIn } from '../api.js';
import { h, show, field, alertBox } from '../dom.js';

export function loginView(email) {
  const error = alertBox();
  const [emailField, emailInput] = field('Email', h('input', { type: 'email', autocomplete: 'username', required: true }));
  const [passField, passInput] = field('Password', h('input', { type: 'password', autocomplete: 'current-password', required: true }));
  emailInput.value = email;
  const notes = [];
  if (sessionStorage.getItem('rolegate.ended')) {
    sessionStorage.removeItem('rolegate.ended');
    notes.push(h('div', { class: 'note' },
      'Your session ended: your API token is no longer valid (it was renewed, your role changed, or it expired). Sign in again.'));
  }
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { novalidate: true }, emailField, passField, error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    if (!emailInput.value || !passInput.value) {
      error.textContent = 'Enter your email and password.';
      return;
    }
    submit.disabled = true;
    try {
      const data = await api.login(emailInput.value, passInput.value);
      signIn(data, emailInput.value);
      window.location.hash = '#/overview';
    } catch (err) {
      error.textContent = err.status === 401 ? 'Email or password is not valid.' : err.message;
      submit.disabled = false;
    }
  });
  show(
    h('h1', null, 'Sign in to User Management'),
    notes,
    form,
    h('p', { class: 'muted' },
      'Your API token is kept in this browser tab only (session storage) and forgotten when you sign out, close the tab, or it expires.'),
  );
}
