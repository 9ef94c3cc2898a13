// The HTTP API: the token, authenticated fetches, one-line errors.
//
// The token is asked for once and kept in localStorage. A URL fragment `#token=...`
// (which the browser never sends to the server) pre-fills it and is removed from the
// address bar at once.

const TOKEN_KEY = "cloudai.dashboard.token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function takeTokenFromFragment(): void {
  const hash = window.location.hash;
  if (!hash.startsWith("#token=")) return;
  const token = decodeURIComponent(hash.slice("#token=".length)).trim();
  if (token) setToken(token);
  history.replaceState(null, "", window.location.pathname + window.location.search + "#/");
}

export function getToken(): string | null {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string): void {
  localStorage.setItem(TOKEN_KEY, token);
}

export function clearToken(): void {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(READ_ONLY_KEY);
}

function headers(extra?: HeadersInit): Headers {
  const out = new Headers(extra);
  const token = getToken();
  if (token) out.set("Authorization", `Bearer ${token}`);
  return out;
}

/** The one-line message of a refusal: the API's `{"error": "..."}` or the status. */
async function errorLine(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { error?: unknown };
    if (typeof body.error === "string") return body.error;
  } catch {
    // not JSON: the status says enough
  }
  return `${response.status} ${response.statusText}`.trim();
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, { ...init, headers: headers(init.headers), cache: "no-store" });
  } catch {
    throw new ApiError(0, "the master did not answer");
  }
  if (!response.ok) throw new ApiError(response.status, await errorLine(response));
  return response;
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const response = await request(path, { signal });
  return (await response.json()) as T;
}

export async function postJson<T>(path: string, body?: unknown): Promise<T> {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return (await response.json()) as T;
}

export type AuthCheck = "ok" | "needs-token" | "bad-token" | "unreachable";

interface SessionInfo {
  secured: boolean;
  scope: "read" | "admin" | null;
}

/** Whether the data calls work as things are: with the stored token, or with none
 *  (a master started with --insecure); learns the token's scope on the way. */
export async function checkAuth(): Promise<AuthCheck> {
  try {
    const session = await getJson<SessionInfo>("/api/session");
    if (session.scope === "read") learnedReadOnly();
    else forgetReadOnly();
    return "ok";
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      return getToken() ? "bad-token" : "needs-token";
    }
    return "unreachable";
  }
}

// The page offers admin controls (cancel) unless GET /api/session said the token's scope
// is read (or the master answered one of them 403): then it hides them for this token.
const READ_ONLY_KEY = "cloudai.dashboard.read-only";

export function mayAdmin(): boolean {
  try {
    return localStorage.getItem(READ_ONLY_KEY) !== (getToken() ?? "");
  } catch {
    return true;
  }
}

export function learnedReadOnly(): void {
  localStorage.setItem(READ_ONLY_KEY, getToken() ?? "");
}

function forgetReadOnly(): void {
  try {
    localStorage.removeItem(READ_ONLY_KEY);
  } catch {
    // storage refused: the controls stay offered, the master still decides
  }
}

export function streamUrl(path: string): string {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const token = getToken();
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${window.location.host}${path}${query}`;
}
