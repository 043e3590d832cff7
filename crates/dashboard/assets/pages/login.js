// Log in: paste an API token, checked with one cheap request before it is kept.

import {api, setToken} from '../api.js';
import {h, uid} from '../dom.js';

export const title = () => 'Log in';

export function render(main, context) {
  const inputId = uid('token');
  const errorId = uid('token-error');
  const input = h('input', {
    id: inputId, name: 'token', type: 'password', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': `${errorId} ${inputId}-hint`,
  });
  const error = h('p', {id: errorId, class: 'field-error', role: 'alert'});
  const button = h('button', {type: 'submit'}, 'Log in');
  if (context.reason) error.textContent = context.reason;

  const form = h('form', {class: 'stack', novalidate: true},
    h('label', {for: inputId}, 'API token'),
    input,
    h('p', {id: `${inputId}-hint`, class: 'hint'},
      'The admin token is in ', h('code', {}, '<data dir>/admin.token'),
      ' (printed once at first start); ', h('code', {}, 'fleetwire token create'), ' makes more.'),
    error,
    button);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = 'Paste an API token first.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = 'Checking…';
    error.textContent = '';
    try {
      await api('GET', '/devices', {query: {limit: 1}, token});
      setToken(token);
      const next = context.query.get('next');
      const target = next && next.startsWith('#/') && next !== '#/login' ? next : '#/';
      if (location.hash === target) context.refresh();
      else location.hash = target;
    } catch (failure) {
      input.setAttribute('aria-invalid', 'true');
      error.textContent = failure.status === 401
        ? `This token was refused (401): ${failure.detail}`
        : failure.status === 403
          ? `This token may not list devices (403): ${failure.detail}`
          : `Could not check the token: ${failure.detail}`;
      input.focus();
    } finally {
      button.disabled = false;
      button.textContent = 'Log in';
    }
  });

  main.append(h('section', {class: 'login card'},
    h('h1', {}, 'Log in to Fleetwire'),
    h('p', {}, 'Paste an API token. It stays in this browser until you log out.'),
    form));
  input.focus();
}
