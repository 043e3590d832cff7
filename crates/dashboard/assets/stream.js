// The live stream (`/api/v1/stream`, a WebSocket): one connection per page with the
// page's filters, reconnecting with backoff. After a reconnect, and after the server
// dropped us for falling behind (`{"kind": "lag"}`), the page is told to refetch what it
// shows, since events were missed in between.

import {getToken, queryString} from './api.js';

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
/** A connection that stayed up this long resets the backoff. */
const STABLE_MS = 5000;

const streams = new Set();
const listeners = new Set();

/** Calls `listener(state)` with 'live', 'connecting' or 'off' whenever the overall state changes. */
export function onStreamState(listener) {
  listeners.add(listener);
  listener(overallState());
  return () => listeners.delete(listener);
}

function overallState() {
  if (streams.size === 0) return 'off';
  for (const stream of streams) if (!stream.isOpen) return 'connecting';
  return 'live';
}

function announce() {
  const state = overallState();
  for (const listener of listeners) listener(state);
}

/**
 * Opens a live stream. `filters`: {devices: [ids], kinds: ['telemetry', ...]}.
 * `onEvent(event)` gets each event; `onResync()` is called when the stream came back
 * after a gap. Returns a function that closes it for good.
 */
export function openStream(filters, {onEvent, onResync}) {
  const stream = {isOpen: false};
  let socket = null;
  let closed = false;
  let delay = FIRST_DELAY_MS;
  let timer = null;
  let hadGap = false;
  let openedAt = 0;
  streams.add(stream);

  const connect = () => {
    timer = null;
    const query = queryString({
      token: getToken(),
      devices: filters.devices && filters.devices.length ? filters.devices.join(',') : null,
      kinds: filters.kinds && filters.kinds.length ? filters.kinds.join(',') : null,
    });
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    socket = new WebSocket(`${scheme}//${location.host}/api/v1/stream${query}`);
    socket.addEventListener('open', () => {
      stream.isOpen = true;
      openedAt = Date.now();
      announce();
      if (hadGap && onResync) onResync();
      hadGap = false;
    });
    socket.addEventListener('message', (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.kind === 'lag') {
        hadGap = true;
        return;
      }
      onEvent(event);
    });
    socket.addEventListener('close', () => {
      socket = null;
      if (closed) return;
      stream.isOpen = false;
      announce();
      hadGap = true;
      if (openedAt && Date.now() - openedAt > STABLE_MS) delay = FIRST_DELAY_MS;
      openedAt = 0;
      // Jitter spreads the reconnections of many dashboards after a server restart.
      timer = setTimeout(connect, delay * (0.75 + Math.random() / 2));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    });
  };
  connect();

  return () => {
    closed = true;
    clearTimeout(timer);
    if (socket) socket.close(1000);
    streams.delete(stream);
    announce();
  };
}
