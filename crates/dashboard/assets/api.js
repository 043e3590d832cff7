// The REST API client: the token, requests with it, and errors as problem details.

const TOKEN_KEY = 'fleetwire.token';

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/** A failed request: `status` (0 when the server could not be reached) and the problem's `detail`. */
export class ApiError extends Error {
  constructor(status, detail, problem = null) {
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
    this.problem = problem;
  }
}

/** `?a=1&b=2` from an object; empty, null and undefined values are left out, arrays repeat. */
export function queryString(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== '') params.append(name, String(item));
    }
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

/**
 * Calls the API: `api('GET', '/devices', {query: {limit: 1}})`. Resolves to the parsed
 * JSON body (null for an empty one); rejects with an ApiError. A 401 on the stored
 * token also fires `fleetwire:unauthorized` on window, so the app can ask to log in again.
 * `token` overrides the stored token (the login page checks a new one with it).
 */
export async function api(method, path, {query, body, token} = {}) {
  const usedToken = token ?? getToken();
  const headers = {Accept: 'application/json'};
  if (usedToken) headers.Authorization = `Bearer ${usedToken}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/api/v1${path}${queryString(query)}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, `Cannot reach the server (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const detail = (data && (data.detail || data.title))
      || text.trim()
      || `${response.status} ${response.statusText}`;
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent('fleetwire:unauthorized', {detail}));
    }
    throw new ApiError(response.status, detail, data);
  }
  return data;
}

export const get = (path, query) => api('GET', path, {query});
export const post = (path, body) => api('POST', path, {body});
export const put = (path, body) => api('PUT', path, {body});
export const del = (path) => api('DELETE', path);

/** A path segment, escaped (device and rule ids may hold dots and dashes, never slashes). */
export const segment = (id) => encodeURIComponent(id);
