// The management API, called with the signed-in user's own API token, so
// every action is decided by the same Cedar policies as any other client.
//
// Where the token lives: sessionStorage of this tab only. Never a cookie (the
// browser would send it by itself, which is what cross-site request forgery
// abuses), never localStorage (it would outlive the tab). It is dropped on
// sign-out, on the first 401 the API answers, and when the token's own
// expiry passes; closing the tab drops it too.

const KEY = 'rolegate.session';

export class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error ? body.error : {};
    super(typeof err.message === 'string' ? err.message : `request failed (HTTP ${status})`);
    this.status = status;
    this.code = err.code;
  }
}

/** The JWT's `exp` claim, read only to forget an expired token early. */
function expiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part));
    return typeof claims.exp === 'number' ? claims.exp : null;
  } catch {
    return null;
  }
}

export function session() {
  let s = null;
  try {
    s = JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    s = null;
  }
  if (!s || typeof s.token !== 'string') return null;
  if (s.exp && Date.now() / 1000 >= s.exp) {
    signOut();
    return null;
  }
  return s;
}

export function signIn(data, email) {
  const s = {
    token: data.token,
    userId: data.userId,
    orgId: data.orgId,
    permission: data.permission,
    email,
    exp: expiry(data.token),
  };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** One API call; resolves to the response's `data`, rejects with ApiError. */
export async function call(method, path, body, { auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const s = auth ? session() : null;
  if (s) headers['X-BINTU-TOKEN'] = s.token;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, { error: { message: 'rolegate could not be reached' } });
  }
  let json = null;
  try {
    json = await resp.json();
  } catch {
    json = null;
  }
  if (resp.status === 401 && s) {
    signOut();
    window.dispatchEvent(new CustomEvent('rolegate:signed-out'));
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json ? json.data : null;
}

export const api = {
  login: (email, password) => call('POST', '/user/validate', { email, password }, { auth: false }),
  organisation: () => call('GET', '/organisation'),
  roles: () => call('GET', '/permission/list'),
  users: (role) => call('GET', role ? `/user?role=${encodeURIComponent(role)}` : '/user'),
  user: (id) => call('GET', `/user/${encodeURIComponent(id)}`),
  setRole: (userId, permission) => call('PUT', '/user/permission', { userId, permission }),
  resetToken: (userId) => call('PUT', '/user/tokenkey', { userId }),
  deleteUser: (id) => call('DELETE', `/user/${encodeURIComponent(id)}`),
  invite: (permission) => call('POST', '/user/invite', { permission }),
  acceptInvite: (token, email, password) =>
    call('POST', '/user/invite/accept', { token, email, password }, { auth: false }),
  passwordReset: (userId) => call('POST', '/user/password/reset', { userId }),
  setPassword: (token, password) => call('POST', '/user/password', { token, password }, { auth: false }),
  audit: (filter) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    const qs = q.toString();
    return call('GET', qs ? `/audit?${qs}` : '/audit');
  },
  explain: (question) => call('POST', '/policy/explain', question),
};
