// The tasks page (every task, newest first, live: task_list.ts) and one task's page: its
// state, live from the same events, and a live tail of its output (GET
// /api/tasks/{id}/output, long-polled; where the master has no such endpoint, the logs of
// GET /api/tasks/{id}).

import { ApiError, getJson, request } from "./api";
import { duration, el, figure, time } from "./format";
import type { TopicSource } from "./stream";
import { TopicFollower } from "./follow";
import { LiveTaskList, type TaskSelection, isTask } from "./task_list";
import {
  ACTIVE_STATUSES,
  TERMINAL_STATUSES,
  type Task,
  type TaskAttempt,
  cancelButton,
  taskDuration,
  taskRow,
  tasksHead,
} from "./tasks_table";

const POLL_MS = 3000; // the list, without the stream's events
const TASK_POLL_MS = 2000; // one task, without them
const TASK_REFRESH_MS = 30_000; // one task, with them: a safety net only
const TICK_MS = 1000; // running tasks' durations
const SHOWN_TASKS = 500;
// The newest this many are fetched (and filtered here); the master keeps every task.
const FETCHED_TASKS = 5000;
const OUTPUT_CHUNK = 65536;
const OUTPUT_WAIT_S = 10;
const MAX_LOG_CHARS = 512 * 1024; // the page keeps the last half MiB of a task's output

export class TasksView {
  readonly root: HTMLElement;
  private readonly list = el("div", { id: "tasks" });
  private readonly line = el("p", { class: "line", id: "tasks-line" });
  private readonly statusSelect: HTMLSelectElement;
  private readonly filterInput: HTMLInputElement;
  private readonly body = el("tbody");
  private readonly table = el("table", { class: "tasks" }, tasksHead(true), this.body);
  private readonly empty = el("p", { class: "empty" }, "No tasks.");
  private readonly source: LiveTaskList;
  private ticker: number | undefined;
  private rows = new Map<string, { task: Task; row: HTMLTableRowElement }>();
  private rowsAdmin = false;

  constructor(
    private readonly admin: () => boolean,
    topics: TopicSource,
  ) {
    this.statusSelect = el(
      "select",
      { id: "task-status", "aria-label": "status" },
      el("option", { value: "" }, "every state"),
      ...["queued", "assigned", "running", "success", "failure", "cancelled", "rejected", "lost", "timed_out"].map(
        (s) => el("option", { value: s }, s),
      ),
    );
    this.filterInput = el("input", {
      type: "search",
      placeholder: "filter: task or worker id",
      "aria-label": "filter tasks",
    });
    this.root = el(
      "section",
      { class: "tasks-page", "data-live": "false" },
      el("h1", {}, "Tasks"),
      el("div", { class: "toolbar" }, this.filterInput, this.statusSelect),
      this.line,
      this.list,
    );
    this.source = new LiveTaskList(
      topics,
      {
        selection: () => this.selection(),
        changed: () => this.render(),
        failed: (message) => {
          this.line.textContent = message;
        },
        liveChanged: (live) => {
          this.root.dataset.live = String(live);
        },
      },
      POLL_MS,
    );
    this.statusSelect.addEventListener("change", () => void this.source.load());
    this.filterInput.addEventListener("input", () => this.render());
  }

  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    this.ticker = window.setInterval(() => this.tick(), TICK_MS);
    this.source.start();
  }

  unmount(): void {
    this.source.stop();
    window.clearInterval(this.ticker);
  }

  private selection(): TaskSelection {
    const status = this.statusSelect.value;
    return {
      query: `limit=${FETCHED_TASKS}${status ? `&status=${status}` : ""}`,
      keeps: (task) => !status || task.status === status,
      limit: FETCHED_TASKS,
    };
  }

  private onAction = (line: string): void => {
    this.line.textContent = line;
    if (!this.source.live) void this.source.load(); // else the task's event brings its state
  };

  /** Redraws the rows whose task changed; the others (and a button under the pointer)
   *  stay the same elements. */
  private render(): void {
    const filter = this.filterInput.value.trim().toLowerCase();
    const shown = this.source.tasks
      .filter((t) => !filter || t.task_id.toLowerCase().includes(filter) || t.worker_id.toLowerCase().includes(filter))
      .slice(0, SHOWN_TASKS);
    if (!shown.length) {
      this.rows.clear();
      this.body.replaceChildren();
      if (this.list.firstChild !== this.empty) this.list.replaceChildren(this.empty);
      return;
    }
    const admin = this.admin();
    if (admin !== this.rowsAdmin) {
      this.rows.clear(); // a token found to be read-only loses its Cancel buttons
      this.rowsAdmin = admin;
    }
    const now = Date.now() / 1000;
    const rows = new Map<string, { task: Task; row: HTMLTableRowElement }>();
    const order: HTMLTableRowElement[] = [];
    for (const task of shown) {
      const cached = this.rows.get(task.task_id);
      const row = cached !== undefined && cached.task === task ? cached.row : taskRow(task, admin, this.onAction, true, now);
      rows.set(task.task_id, { task, row });
      order.push(row);
    }
    this.rows = rows;
    const children = this.body.children;
    if (children.length !== order.length || order.some((row, i) => children[i] !== row)) {
      this.body.replaceChildren(...order);
    }
    if (this.list.firstChild !== this.table) this.list.replaceChildren(this.table);
  }

  /** The running tasks' durations grow. */
  private tick(): void {
    const now = Date.now() / 1000;
    for (const { task, row } of this.rows.values()) {
      if (task.started_at === null || task.finished_at !== null) continue;
      const cell = row.querySelector<HTMLElement>("td.duration");
      const text = duration(taskDuration(task, now));
      if (cell !== null && cell.textContent !== text) cell.textContent = text;
    }
  }
}

export class TaskView {
  readonly root: HTMLElement;
  private readonly figures = el("div", { class: "figures" });
  private readonly attempts = el("div", { id: "attempts" });
  private readonly actions = el("div", { class: "actions" });
  private readonly line = el("p", { class: "line", id: "task-line" });
  private readonly log = el("pre", { class: "log", id: "log" });
  private readonly logNote = el("p", { class: "note", id: "log-note" });
  private task: Task | null = null;
  private closed = false;
  private readonly follower: TopicFollower;
  private readonly recording = new Set<Task[]>(); // events that came during each read
  private abort = new AbortController();
  private streaming = false;
  private text = "";

  constructor(
    private readonly taskId: string,
    private readonly admin: () => boolean,
    topics: TopicSource,
  ) {
    this.follower = new TopicFollower(
      topics,
      "tasks",
      {
        read: () => this.refresh(),
        event: (event) => this.onEvent(event),
        liveChanged: (live) => {
          this.root.dataset.live = String(live);
        },
      },
      TASK_REFRESH_MS,
      TASK_POLL_MS,
    );
    this.root = el(
      "section",
      { class: "task", "data-task-id": taskId, "data-live": "false" },
      el("h1", {}, el("a", { href: "#/tasks" }, "Tasks"), " / ", taskId),
      this.figures,
      this.attempts,
      this.actions,
      this.line,
      el("h2", {}, "Output"),
      this.logNote,
      this.log,
    );
  }

  /** The task is read once, then follows the stream's `tasks` events (follow.ts: read
   *  again when they start to flow, every 30 s, and every 2 s while they do not). */
  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    void this.follower.read().then(() => {
      if (this.closed) return;
      this.follower.start();
      void this.tail();
    });
  }

  unmount(): void {
    this.closed = true;
    this.abort.abort();
    this.follower.stop();
  }

  private async refresh(): Promise<boolean> {
    const during: Task[] = [];
    this.recording.add(during);
    try {
      this.task = await getJson<Task>(`/api/tasks/${encodeURIComponent(this.taskId)}`);
    } catch (error) {
      this.line.textContent = error instanceof Error ? error.message : String(error);
      return false;
    } finally {
      this.recording.delete(during);
    }
    if (this.closed) return false;
    // An event that came while the task was on its way may be newer than the read.
    for (const event of during) this.apply(event);
    this.render();
    if (!this.streaming && this.task.logs !== undefined && this.task.logs !== this.text) {
      this.setText(this.task.logs);
    }
    return true;
  }

  private onEvent(event: Record<string, unknown>): void {
    if (!isTask(event) || event.task_id !== this.taskId) return;
    for (const during of this.recording) during.push(event);
    if (this.task === null) return;
    const ended = TERMINAL_STATUSES.has(event.status) && !TERMINAL_STATUSES.has(this.task.status);
    this.apply(event);
    this.render();
    // A worker that does not stream its output reports its logs with its result; the
    // events carry no logs: read them.
    if (ended && !this.streaming) void this.follower.read();
  }

  /** The task of an event, with the logs of the last read (events carry none). */
  private apply(event: Task): void {
    if (this.task === null) return;
    const { logs, logs_truncated } = this.task;
    this.task = { ...event, logs, logs_truncated };
  }

  private render(): void {
    const task = this.task;
    if (task === null) return;
    this.root.dataset.status = task.status;
    const rows: [string, string][] = [
      ["State", task.status],
      ["Worker", task.worker_id],
      ["Command", task.command || "–"],
      ["Image", task.docker_image || "–"],
      ["Submitted", time(task.submitted_at)],
      ["Started", time(task.started_at)],
      ["Finished", time(task.finished_at)],
      ["Duration", duration(taskDuration(task))],
      ["Exit code", task.exit_code === null ? "–" : String(task.exit_code)],
      ["Message", task.message || "–"],
    ];
    if ((task.retries ?? 0) > 0) rows.push(["Attempt", `${task.attempt ?? 1} of ${(task.retries ?? 0) + 1}`]);
    if (task.retry_at != null) rows.push(["Next attempt", time(task.retry_at)]);
    this.figures.replaceChildren(...rows.map(([k, v]) => figure(k, v)));
    this.renderAttempts(task.attempts ?? []);
    const cancellable = this.admin() && ACTIVE_STATUSES.has(task.status);
    if (cancellable && !this.actions.firstChild) {
      this.actions.append(
        cancelButton(task, (line) => {
          this.line.textContent = line;
          void this.follower.read();
        }),
      );
    } else if (!cancellable) {
      this.actions.replaceChildren();
    }
  }

  /** The earlier runs of a task that was run again: one row each. */
  private renderAttempts(attempts: TaskAttempt[]): void {
    const shown = this.attempts.dataset.count ?? "0";
    if (shown === String(attempts.length)) return;
    this.attempts.dataset.count = String(attempts.length);
    if (!attempts.length) {
      this.attempts.replaceChildren();
      return;
    }
    const head = el(
      "tr",
      {},
      ...["Attempt", "Worker", "State", "Exit", "Duration", "Ended", "Message"].map((h) => el("th", {}, h)),
    );
    const rows = attempts.map((a) =>
      el(
        "tr",
        { "data-attempt": String(a.attempt), "data-status": a.status },
        el("td", {}, String(a.attempt)),
        el("td", {}, el("a", { href: `#/worker/${encodeURIComponent(a.worker_id)}` }, a.worker_id)),
        el("td", {}, el("span", { class: "badge", "data-state": a.status }, a.status)),
        el("td", {}, a.exit_code === null ? "–" : String(a.exit_code)),
        el("td", {}, duration(a.started_at === null ? null : a.finished_at - a.started_at)),
        el("td", {}, time(a.finished_at)),
        el("td", { class: "ellipsis", title: a.message }, a.message || "–"),
      ),
    );
    this.attempts.replaceChildren(
      el("h2", {}, "Earlier attempts"),
      el("table", { class: "tasks" }, el("thead", {}, head), el("tbody", {}, ...rows)),
    );
  }

  private setText(text: string): void {
    const atBottom = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 4;
    this.text = text.length > MAX_LOG_CHARS ? text.slice(text.length - MAX_LOG_CHARS) : text;
    this.log.textContent = this.text;
    this.log.dataset.length = String(this.text.length);
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  /** Long-polls the output endpoint from offset 0 until the output is complete. */
  private async tail(): Promise<void> {
    const decoder = new TextDecoder();
    let offset = 0;
    let failures = 0;
    while (!this.closed) {
      let response: Response;
      const wait = this.streaming ? OUTPUT_WAIT_S : 0; // the first call says at once if it exists
      try {
        response = await request(
          `/api/tasks/${encodeURIComponent(this.taskId)}/output?offset=${offset}&limit=${OUTPUT_CHUNK}&wait=${wait}`,
          { signal: this.abort.signal },
        );
      } catch (error) {
        if (this.closed) return;
        if (error instanceof ApiError && (error.status === 404 || error.status === 405) && offset === 0) {
          this.logNote.textContent = "Live output is not available from this master: the output shows when the task reports it.";
          this.logNote.dataset.live = "false";
          return;
        }
        if (error instanceof ApiError && error.status === 410) {
          // Deleted past the master's task_output_retention: the task's logs (its last
          // part) still show above.
          this.logNote.textContent = error.message;
          this.logNote.dataset.live = "false";
          return;
        }
        failures++;
        this.logNote.textContent = `output: ${error instanceof Error ? error.message : error}; retrying`;
        await new Promise((r) => window.setTimeout(r, Math.min(500 * 2 ** failures, 10_000)));
        continue;
      }
      failures = 0;
      const chunk = decoder.decode(new Uint8Array(await response.arrayBuffer()), { stream: true });
      if (!this.streaming) {
        this.streaming = true; // from now on the output endpoint is the source, not the logs
        this.logNote.dataset.live = "true";
        this.setText(chunk);
      } else if (chunk) {
        this.setText(this.text + chunk);
      }
      const next = Number(response.headers.get("X-Next-Offset"));
      const size = response.headers.get("X-Output-Size");
      if (Number.isFinite(next) && next >= offset) offset = next;
      const sizeNumber = Number(size);
      const complete =
        response.headers.get("X-Output-Complete") === "true" &&
        (!Number.isFinite(sizeNumber) || offset >= sizeNumber);
      this.logNote.textContent = complete
        ? `complete: ${size ?? offset} bytes`
        : `live: ${size ?? offset} bytes so far`;
      if (complete) {
        const rest = decoder.decode();
        if (rest) this.setText(this.text + rest);
        // A worker that does not stream (a Go worker) leaves no output here: its logs are
        // in the task's record, which the refresh shows.
        if (this.text === "") this.streaming = false;
        return;
      }
    }
  }
}
