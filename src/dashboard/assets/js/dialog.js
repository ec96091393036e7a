// Confirmation dialogs on the native <dialog>: modal, focus kept inside,
// Escape closes, focus returns to the control that opened it.

import { h, alertBox } from './dom.js';

let seq = 0;

/**
 * Open a dialog. `body` is a list of nodes; `confirm` is the label of the
 * confirming button; `run` does the action and may throw (its message is
 * shown and the dialog stays open); `typed` asks the user to type a text
 * before the confirm button is enabled (the deliberate second confirmation).
 */
export function openDialog({ title, body, confirm, danger = false, typed = null, run, ready = null }) {
  const id = `dlg${++seq}`;
  const opener = document.activeElement;
  const error = alertBox();
  const ok = h('button', { type: 'submit', class: danger ? 'danger' : '' }, confirm);
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  let typedInput = null;
  const extra = [];
  if (typed) {
    typedInput = h('input', { id: `${id}-typed`, autocomplete: 'off', spellcheck: 'false' });
    extra.push(h('label', { for: `${id}-typed` }, `Type ${typed} to confirm`), typedInput);
    ok.disabled = true;
    typedInput.addEventListener('input', () => {
      ok.disabled = typedInput.value !== typed || (ready !== null && !ready());
    });
  } else if (ready !== null) {
    ok.disabled = !ready();
  }
  const form = h('form', { method: 'dialog' }, h('h2', { id: `${id}-title` }, title), body, extra, error,
    h('div', { class: 'actions' }, ok, cancel));
  const dlg = h('dialog', { 'aria-labelledby': `${id}-title` }, form);
  const close = () => {
    dlg.close();
    dlg.remove();
    if (opener && opener.isConnected) opener.focus();
  };
  cancel.addEventListener('click', close);
  dlg.addEventListener('cancel', (e) => {
    e.preventDefault();
    close();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (ok.disabled) return;
    ok.disabled = true;
    error.textContent = '';
    try {
      await run();
      close();
    } catch (err) {
      error.textContent = err.message;
      ok.disabled = false;
    }
  });
  document.body.append(dlg);
  dlg.showModal();
  return {
    dialog: dlg,
    refresh: () => {
      const typedOk = typedInput === null || typedInput.value === typed;
      ok.disabled = !typedOk || (ready !== null && !ready());
    },
  };
}
