// The tasks page (every task, newest first, refreshed every few seconds) and one task's
// page: its state and a live tail of its output (GET /api/tasks/{id}/output, long-polled;
// where the master has no such endpoint, the logs of GET /api/tasks/{id}).

import { ApiError, getJson, request } from "./api";
import { duration, el, figure, time } from "./format";
import { ACTIVE_STATUSES, type Task, cancelButton, taskDuration, tasksTable } from "./tasks_table";

const REFRESH_MS = 3000;
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
  private timer: number | undefined;
  private tasks: Task[] = [];

  constructor(private readonly admin: () => boolean) {
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
      { class: "tasks-page" },
      el("h1", {}, "Tasks"),
      el("div", { class: "toolbar" }, this.filterInput, this.statusSelect),
      this.line,
      this.list,
    );
    this.statusSelect.addEventListener("change", () => void this.load());
    this.filterInput.addEventListener("input", () => this.render());
  }

  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    void this.load();
    this.timer = window.setInterval(() => void this.load(), REFRESH_MS);
  }

  unmount(): void {
    window.clearInterval(this.timer);
  }

  private async load(): Promise<void> {
    const status = this.statusSelect.value;
    try {
      const query = `limit=${FETCHED_TASKS}${status ? `&status=${status}` : ""}`;
      this.tasks = await getJson<Task[]>(`/api/tasks?${query}`);
      this.tasks.reverse();
      this.render();
    } catch (error) {
      this.line.textContent = error instanceof Error ? error.message : String(error);
    }
  }

  private render(): void {
    const filter = this.filterInput.value.trim().toLowerCase();
    const shown = this.tasks
      .filter((t) => !filter || t.task_id.toLowerCase().includes(filter) || t.worker_id.toLowerCase().includes(filter))
      .slice(0, SHOWN_TASKS);
    this.list.replaceChildren(
      shown.length
        ? tasksTable(shown, this.admin(), (line) => {
            this.line.textContent = line;
            void this.load();
          })
        : el("p", { class: "empty" }, "No tasks."),
    );
  }
}

export class TaskView {
  readonly root: HTMLElement;
  private readonly figures = el("div", { class: "figures" });
  private readonly actions = el("div", { class: "actions" });
  private readonly line = el("p", { class: "line", id: "task-line" });
  private readonly log = el("pre", { class: "log", id: "log" });
  private readonly logNote = el("p", { class: "note", id: "log-note" });
  private task: Task | null = null;
  private closed = false;
  private timer: number | undefined;
  private abort = new AbortController();
  private streaming = false;
  private text = "";

  constructor(
    private readonly taskId: string,
    private readonly admin: () => boolean,
  ) {
    this.root = el(
      "section",
      { class: "task", "data-task-id": taskId },
      el("h1", {}, el("a", { href: "#/tasks" }, "Tasks"), " / ", taskId),
      this.figures,
      this.actions,
      this.line,
      el("h2", {}, "Output"),
      this.logNote,
      this.log,
    );
  }

  mount(parent: HTMLElement): void {
    parent.replaceChildren(this.root);
    void this.refresh().then(() => void this.tail());
    this.timer = window.setInterval(() => void this.refresh(), 2000);
  }

  unmount(): void {
    this.closed = true;
    this.abort.abort();
    window.clearInterval(this.timer);
  }

  private async refresh(): Promise<void> {
    try {
      this.task = await getJson<Task>(`/api/tasks/${encodeURIComponent(this.taskId)}`);
    } catch (error) {
      this.line.textContent = error instanceof Error ? error.message : String(error);
      return;
    }
    if (this.closed) return;
    this.render();
    if (!this.streaming && this.task.logs !== undefined && this.task.logs !== this.text) {
      this.setText(this.task.logs);
    }
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
    this.figures.replaceChildren(...rows.map(([k, v]) => figure(k, v)));
    const cancellable = this.admin() && ACTIVE_STATUSES.has(task.status);
    if (cancellable && !this.actions.firstChild) {
      this.actions.append(
        cancelButton(task, (line) => {
          this.line.textContent = line;
          void this.refresh();
        }),
      );
    } else if (!cancellable) {
      this.actions.replaceChildren();
    }
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
