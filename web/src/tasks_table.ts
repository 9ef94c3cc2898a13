// A table of tasks (the tasks page and a worker's page): state, worker, duration, and a
// cancel button for tokens that may make admin calls.

import { ApiError, learnedReadOnly, postJson } from "./api";
import { duration, el } from "./format";

export interface TaskAttempt {
  attempt: number;
  worker_id: string;
  status: string;
  message: string;
  exit_code: number | null;
  started_at: number | null;
  finished_at: number;
}

export interface Task {
  task_id: string;
  worker_id: string;
  docker_image: string;
  command: string;
  status: string;
  message: string;
  submitted_at: number;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  retries?: number;
  attempt?: number;
  retry_at?: number | null; // queued for its next attempt: handed over then
  attempts?: TaskAttempt[]; // earlier runs that failed, timed out or were lost
  logs?: string;
  logs_truncated?: boolean;
}

export const ACTIVE_STATUSES = new Set(["queued", "assigned", "running"]);
export const TERMINAL_STATUSES = new Set(["success", "failure", "cancelled", "rejected", "lost", "timed_out"]);

export function taskDuration(task: Task, now = Date.now() / 1000): number | null {
  if (task.started_at === null) return null;
  return (task.finished_at ?? now) - task.started_at;
}

export function cancelButton(task: Task, onDone: (line: string) => void): HTMLButtonElement {
  const button = el("button", { class: "cancel", "data-cancel": task.task_id }, "Cancel");
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    event.stopPropagation();
    button.disabled = true;
    try {
      await postJson(`/api/tasks/${encodeURIComponent(task.task_id)}/cancel`);
      onDone(`cancellation of ${task.task_id} requested`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 403) learnedReadOnly();
      onDone(error instanceof ApiError ? `cancel ${task.task_id}: ${error.message}` : String(error));
      button.disabled = false;
    }
  });
  return button;
}

export function tasksHead(showWorker = true): HTMLTableSectionElement {
  return el(
    "thead",
    {},
    el(
      "tr",
      {},
      el("th", {}, "Task"),
      el("th", {}, "State"),
      ...(showWorker ? [el("th", {}, "Worker")] : []),
      el("th", {}, "Command / image"),
      el("th", {}, "Duration"),
      el("th", {}, "Exit"),
      el("th", {}, ""),
    ),
  );
}

/** One task's row; its duration cell (class `duration`) may be updated in place. */
export function taskRow(
  task: Task,
  admin: boolean,
  onAction: (line: string) => void,
  showWorker = true,
  now = Date.now() / 1000,
): HTMLTableRowElement {
  const action = admin && ACTIVE_STATUSES.has(task.status) ? cancelButton(task, onAction) : el("span");
  return el(
    "tr",
    { "data-task-id": task.task_id, "data-status": task.status },
    el("td", {}, el("a", { href: `#/tasks/${encodeURIComponent(task.task_id)}` }, task.task_id)),
    el("td", {}, el("span", { class: "badge", "data-state": task.status }, task.status)),
    ...(showWorker
      ? [el("td", {}, el("a", { href: `#/worker/${encodeURIComponent(task.worker_id)}` }, task.worker_id))]
      : []),
    el("td", { class: "mono ellipsis", title: task.command || task.docker_image }, task.command || task.docker_image),
    el("td", { class: "duration" }, duration(taskDuration(task, now))),
    el("td", {}, task.exit_code === null ? "–" : String(task.exit_code)),
    el("td", {}, action),
  );
}

export function tasksTable(
  tasks: Task[],
  admin: boolean,
  onAction: (line: string) => void,
  showWorker = true,
): HTMLTableElement {
  const now = Date.now() / 1000;
  const body = el("tbody");
  for (const task of tasks) body.append(taskRow(task, admin, onAction, showWorker, now));
  return el("table", { class: "tasks" }, tasksHead(showWorker), body);
}
