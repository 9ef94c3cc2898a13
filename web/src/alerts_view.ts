// Alerts: the count of firing alerts beside the Alerts link on every page, and the alerts
// page (#/alerts): the current alerts (pending, firing, recently resolved), the silences
// and the newest transitions of the history. A token that may make admin calls silences
// an alert for an hour (POST /api/silences) and ends a silence (DELETE
// /api/silences/{id}) from the page.
//
// Both follow the stream's `alerts` topic: an event says an alert fired or resolved, and
// the alerts are read again (GET /api/alerts; the page also GET /api/alerts/history),
// once per burst of events. An alert turning pending, or a silence, sends no event: the
// page reads again every 10 s (the count every 30 s), and every 5 s while the events do
// not flow. A master without alerts answers 503: the page says so and the count hides.

import { ApiError, getJson, learnedReadOnly, postJson, request } from "./api";
import { TopicFollower } from "./follow";
import { ago, el, time } from "./format";
import type { TopicSource } from "./stream";

const BURST_MS = 250; // events that come together: one read
const PAGE_REFRESH_MS = 10_000;
const COUNT_REFRESH_MS = 30_000;
const POLL_MS = 5000; // without the events
const HISTORY_SHOWN = 50;
const SILENCE_SECONDS = 3600; // the page's Silence button

interface Alert {
  rule: string;
  worker_id: string;
  state: string;
  severity: string;
  value: number | null;
  since: number;
  fired_at: number | null;
  resolved_at: number | null;
  silenced: boolean;
  summary: string;
}

interface Silence {
  silence_id: string;
  matchers: { name: string; value: string; op: string }[];
  starts_at: number;
  ends_at: number;
  created_by: string;
  comment: string;
  state: string;
}

interface AlertEvent {
  id: number;
  at: number;
  rule: string;
  worker_id: string;
  state: string;
  severity: string;
  value: number | null;
  silenced: boolean;
  reason: string;
}

/** Follows the `alerts` topic (follow.ts): an event (an alert fired or resolved) makes
 *  one read per burst of events. */
class AlertsFollower {
  private readonly follower: TopicFollower;
  private burst: number | undefined;

  constructor(
    topics: TopicSource,
    read: () => Promise<boolean>,
    liveMs: number,
    liveChanged?: (live: boolean) => void,
  ) {
    const event = () => this.onEvent();
    this.follower = new TopicFollower(topics, "alerts", { read, event, liveChanged }, liveMs, POLL_MS);
  }

  start(): void {
    this.follower.start();
  }

  stop(): void {
    this.follower.stop();
    window.clearTimeout(this.burst);
  }

  read(): Promise<void> {
    return this.follower.read();
  }

  private onEvent(): void {
    if (this.burst !== undefined) return;
    this.burst = window.setTimeout(() => {
      this.burst = undefined;
      void this.follower.read();
    }, BURST_MS);
  }
}

/** The number of firing alerts (not silenced) beside the Alerts link. */
export class FiringCount {
  private readonly follower: AlertsFollower;

  constructor(
    topics: TopicSource,
    private readonly badge: HTMLElement,
  ) {
    this.follower = new AlertsFollower(topics, () => this.read(), COUNT_REFRESH_MS);
  }

  start(): void {
    this.follower.start();
  }

  stop(): void {
    this.follower.stop();
  }

  /** Read again now (after a silence made or ended here: no event says so). */
  refresh(): void {
    void this.follower.read();
  }

  private async read(): Promise<boolean> {
    let alerts: Alert[] | null = null;
    try {
      alerts = await getJson<Alert[]>("/api/alerts?state=firing");
    } catch {
      // no alerts on this master, or it does not answer: nothing to show
    }
    const firing = alerts?.filter((a) => !a.silenced).length ?? 0;
    this.badge.dataset.firing = String(firing);
    this.badge.textContent = firing ? String(firing) : "";
    this.badge.hidden = firing === 0;
    return alerts !== null;
  }
}

function alertRow(alert: Alert, now: number, action: Node): HTMLTableRowElement {
  const state = alert.silenced ? `${alert.state}, silenced` : alert.state;
  return el(
    "tr",
    { "data-rule": alert.rule, "data-worker-id": alert.worker_id, "data-state": alert.state },
    el("td", {}, el("span", { class: "badge", "data-state": alert.state }, state)),
    el("td", {}, alert.rule),
    el("td", {}, el("a", { href: `#/worker/${encodeURIComponent(alert.worker_id)}` }, alert.worker_id)),
    el("td", {}, alert.severity),
    el("td", { class: "c-num" }, alert.value === null ? "–" : String(Number(alert.value.toFixed(2)))),
    el("td", {}, ago(alert.fired_at ?? alert.since, now)),
    el("td", { class: "ellipsis", title: alert.summary }, alert.summary || "–"),
    el("td", {}, action),
  );
}

function silenceRow(silence: Silence, action: Node): HTMLTableRowElement {
  const matchers = silence.matchers.map((m) => `${m.name}${m.op}${m.value}`).join(", ");
  return el(
    "tr",
    { "data-silence-id": silence.silence_id, "data-state": silence.state },
    el("td", {}, el("span", { class: "badge", "data-state": silence.state }, silence.state)),
    el("td", { class: "mono" }, matchers),
    el("td", {}, time(silence.ends_at)),
    el("td", {}, silence.created_by || "–"),
    el("td", { class: "ellipsis", title: silence.comment }, silence.comment || "–"),
    el("td", {}, action),
  );
}

function eventRow(event: AlertEvent, now: number): HTMLTableRowElement {
  return el(
    "tr",
    { "data-event-id": String(event.id), "data-state": event.state },
    el("td", {}, ago(event.at, now)),
    el("td", {}, el("span", { class: "badge", "data-state": event.state }, event.state)),
    el("td", {}, event.rule),
    el("td", {}, el("a", { href: `#/worker/${encodeURIComponent(event.worker_id)}` }, event.worker_id)),
    el("td", { class: "c-num" }, event.value === null ? "–" : String(Number(event.value.toFixed(2)))),
    el("td", {}, [event.silenced ? "silenced" : "", event.reason].filter(Boolean).join("; ") || "–"),
  );
}

function table(headings: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  return el(
    "table",
    { class: "tasks" },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows),
  );
}

export class AlertsView {
  readonly root: HTMLElement;
  private readonly current = el("div", { id: "alerts" });
  private readonly silences = el("div", { id: "silences" });
  private readonly history = el("div", { id: "alert-history" });
  private readonly line = el("p", { class: "line", id: "alerts-line" });
  private readonly follower: AlertsFollower;
  private generation = 0;
  private readFailed = false; // the line says why the last read failed

  constructor(
    topics: TopicSource,
    private readonly admin: () => boolean,
    private readonly changed: () => void, // a silence made or ended here
  ) {
    this.root = el(
      "section",
      { class: "alerts-page", "data-live": "false" },
      el("h1", {}, "Alerts"),
      this.line,
      this.current,
      el("h2", {}, "Silences"),
      this.silences,
      el("h2", {}, "History"),
      this.history,
    );
    this.follower = new AlertsFollower(topics, () => this.read(), PAGE_REFRESH_MS, (live) => {
      this.root.dataset.live = String(live);
    });
  }

  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    this.follower.start();
  }

  unmount(): void {
    this.follower.stop();
  }

  private async read(): Promise<boolean> {
    const generation = ++this.generation;
    let alerts: Alert[];
    let silences: Silence[];
    let events: AlertEvent[];
    try {
      [alerts, silences, events] = await Promise.all([
        getJson<Alert[]>("/api/alerts"),
        getJson<Silence[]>("/api/silences"),
        getJson<AlertEvent[]>(`/api/alerts/history?limit=${HISTORY_SHOWN}`),
      ]);
    } catch (error) {
      if (generation !== this.generation) return false;
      this.readFailed = true;
      this.line.textContent =
        error instanceof ApiError && error.status === 503
          ? "Alerts are not enabled on this master."
          : error instanceof Error
            ? error.message
            : String(error);
      return false;
    }
    if (generation !== this.generation) return false; // a newer read is on its way
    if (this.readFailed) this.line.textContent = "";
    this.readFailed = false;
    const now = Date.now() / 1000;
    const admin = this.admin();
    const order: Record<string, number> = { firing: 0, pending: 1, resolved: 2 };
    alerts.sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3) || b.since - a.since);
    this.current.replaceChildren(
      alerts.length
        ? table(
            ["State", "Rule", "Worker", "Severity", "Value", "Since", "Summary", ""],
            alerts.map((a) => alertRow(a, now, admin ? this.silenceButton(a) : el("span"))),
          )
        : el("p", { class: "empty" }, "No alerts."),
    );
    const shown = silences.filter((s) => s.state !== "expired");
    this.silences.replaceChildren(
      shown.length
        ? table(
            ["State", "Matches", "Ends", "By", "Comment", ""],
            shown.map((s) => silenceRow(s, admin ? this.endButton(s) : el("span"))),
          )
        : el("p", { class: "empty" }, "No silences."),
    );
    this.history.replaceChildren(
      events.length
        ? table(
            ["When", "State", "Rule", "Worker", "Value", "Note"],
            events.map((e) => eventRow(e, now)),
          )
        : el("p", { class: "empty" }, "Nothing yet."),
    );
    return true;
  }

  private silenceButton(alert: Alert): Node {
    if (alert.silenced || alert.state === "resolved") return el("span");
    const matchers = [
      { name: "alertname", value: alert.rule, op: "=" },
      { name: "worker_id", value: alert.worker_id, op: "=" },
    ];
    return this.button("Silence 1 h", { "data-silence": `${alert.rule}/${alert.worker_id}` }, () =>
      postJson<Silence>("/api/silences", {
        matchers,
        duration_seconds: SILENCE_SECONDS,
        comment: "from the dashboard",
        created_by: "dashboard",
      }).then((s) => `silenced ${alert.rule} on ${alert.worker_id} until ${time(s.ends_at)}`),
    );
  }

  private endButton(silence: Silence): Node {
    return this.button("End", { "data-end-silence": silence.silence_id }, () =>
      request(`/api/silences/${encodeURIComponent(silence.silence_id)}`, { method: "DELETE" }).then(
        () => `silence ${silence.silence_id} ended`,
      ),
    );
  }

  /** An admin action: its one-line outcome under the title, then the page and the count
   *  read again (a silence sends no event). */
  private button(label: string, attrs: Record<string, string>, act: () => Promise<string>): Node {
    const button = el("button", { class: "cancel", ...attrs }, label);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        this.line.textContent = await act();
      } catch (error) {
        if (error instanceof ApiError && error.status === 403) learnedReadOnly();
        this.line.textContent = error instanceof Error ? error.message : String(error);
      }
      this.changed();
      void this.follower.read();
    });
    return button;
  }
}
