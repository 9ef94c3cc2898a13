// The dashboard's entry: the token (login form), the one telemetry stream, the
// connection indicator, the count of firing alerts, and a small hash router: #/
// (overview), #/worker/ID, #/tasks, #/tasks/ID, #/alerts.

import "./style.css";

import { AlertsView, FiringCount } from "./alerts_view";
import { checkAuth, clearToken, getToken, mayAdmin, setToken, takeTokenFromFragment } from "./api";
import { Cluster } from "./cluster";
import { el } from "./format";
import { OverviewView } from "./overview";
import { type Connection, TelemetryStream } from "./stream";
import { TaskView, TasksView } from "./tasks_view";
import { WorkerView } from "./worker_view";

interface View {
  mount(parent: HTMLElement): void;
  unmount(): void;
}

const app = document.getElementById("app") as HTMLElement;
const connection = document.getElementById("conn") as HTMLElement;
const logout = document.getElementById("logout") as HTMLButtonElement;
const firingBadge = document.getElementById("firing") as HTMLElement;

const cluster = new Cluster();
let current: View | null = null;
let overview: OverviewView | null = null;
let stream: TelemetryStream | null = null;
let firing: FiringCount | null = null;

function stopStream(): void {
  firing?.stop();
  firing = null;
  stream?.stop();
  stream = null;
}

function showConnection(state: Connection, detail: string): void {
  connection.dataset.state = state;
  connection.textContent = detail;
}

async function onDrop(): Promise<void> {
  // A WebSocket refused for its token looks like any failed connect: ask the API why.
  const check = await checkAuth();
  if (check === "bad-token" || check === "needs-token") {
    stopStream();
    showLogin(check === "bad-token" ? "The master no longer accepts this token." : "");
  }
}

function route(): void {
  const live = stream;
  if (live === null) return; // the login form is up
  current?.unmount();
  const hash = window.location.hash || "#/";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  const isAdmin = mayAdmin;
  let view: View;
  if (parts[0] === "worker" && parts[1]) view = new WorkerView(cluster, parts[1], isAdmin, live);
  else if (parts[0] === "tasks" && parts[1]) view = new TaskView(parts[1], isAdmin, live);
  else if (parts[0] === "tasks") view = new TasksView(isAdmin, live);
  else if (parts[0] === "alerts") view = new AlertsView(live, isAdmin, () => firing?.refresh());
  else view = overview ??= new OverviewView(cluster);
  for (const link of document.querySelectorAll<HTMLElement>("[data-nav]")) {
    const page = parts[0] === "tasks" || parts[0] === "alerts" ? parts[0] : "overview";
    link.classList.toggle("here", link.dataset.nav === page);
  }
  current = view;
  view.mount(app);
}

function showLogin(problem: string): void {
  current?.unmount();
  current = null;
  showConnection("reconnecting", "signed out");
  const input = el("input", {
    type: "password",
    id: "token",
    name: "token",
    autocomplete: "current-password",
    placeholder: "cloudai.…",
    required: "",
  });
  const line = el("p", { class: "line", id: "login-line" }, problem);
  const form = el(
    "form",
    { class: "login", id: "login" },
    el("h1", {}, "API token"),
    el(
      "p",
      {},
      "This master needs an API token (scope read to watch, admin to cancel tasks). " +
        "On the master's machine, `cloudai api-token create --scope read` makes one; the " +
        "master's own admin token is in its data directory (admin.token).",
    ),
    input,
    el("button", { type: "submit" }, "Open the dashboard"),
    line,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    const check = await checkAuth();
    if (check === "ok") void start();
    else line.textContent = check === "unreachable" ? "The master did not answer." : "The master does not accept this token.";
  });
  app.replaceChildren(form);
  input.focus();
}

async function start(): Promise<void> {
  const check = await checkAuth();
  if (check === "needs-token" || check === "bad-token") {
    showLogin(check === "bad-token" ? "The master does not accept the stored token." : "");
    return;
  }
  logout.hidden = getToken() === null;
  cluster.clear();
  stream = new TelemetryStream(cluster, showConnection, () => void onDrop());
  stream.start();
  firing = new FiringCount(stream, firingBadge);
  firing.start();
  route();
}

logout.addEventListener("click", () => {
  stopStream();
  clearToken();
  logout.hidden = true;
  showLogin("");
});

window.addEventListener("hashchange", () => {
  if (!window.location.hash.startsWith("#token=")) {
    route();
    return;
  }
  takeTokenFromFragment(); // a new token: start over with it
  stopStream();
  void start();
});
takeTokenFromFragment();
// For the browser tests and the frame-time measurement.
Object.assign(window, {
  cloudaiDashboard: {
    workers: () => cluster.workers.size,
    messages: () => stream?.messages ?? 0,
    redrawCount: () => stream?.redrawCount ?? 0,
    redraws: () => {
      const s = stream;
      if (s === null) return [];
      return Array.from(s.redraws.subarray(0, Math.min(s.redrawCount, s.redraws.length)));
    },
    admin: mayAdmin,
  },
});
void start();
