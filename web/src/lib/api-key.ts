//! The server's API key on this page: kept for the browser session (sessionStorage), or
//! across sessions when the user asks to remember it (localStorage); sent by the API client
//! and the socket. When the server answers 401, whoever listens (the key prompt) is told.

const STORAGE_KEY = "millm.apiKey";

type Listener = () => void;
const listeners = new Set<Listener>();
let needed = false;

function stores(): Storage[] {
  if (typeof window === "undefined") return [];
  return [window.sessionStorage, window.localStorage].filter(Boolean);
}

/** The key to send, if the user gave one. */
export function getApiKey(): string | null {
  for (const store of stores()) {
    const key = store.getItem(STORAGE_KEY);
    if (key) return key;
  }
  return null;
}

/** Keeps `key` for this browser session, or in this browser when `remember` is set. */
export function setApiKey(key: string, remember: boolean): void {
  clearApiKey();
  const store = remember ? window.localStorage : window.sessionStorage;
  store.setItem(STORAGE_KEY, key.trim());
  needed = false;
  emit();
}

/** Forgets the key everywhere. */
export function clearApiKey(): void {
  for (const store of stores()) store.removeItem(STORAGE_KEY);
}

/** True after the server refused the page's key (or its lack of one). */
export function isApiKeyNeeded(): boolean {
  return needed;
}

/** Tells the listeners that the server wants a (different) key. */
export function notifyApiKeyNeeded(): void {
  if (needed) return;
  needed = true;
  emit();
}

/** Calls `listener` whenever the key is needed or given; returns the unsubscribe. */
export function subscribeApiKey(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Test helper: forgets the key and the "needed" state. */
export function resetApiKey(): void {
  clearApiKey();
  needed = false;
  emit();
}

function emit(): void {
  for (const l of listeners) l();
}
