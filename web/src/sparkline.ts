// Sparklines on canvas: one polyline per ring, no library, no allocation per draw.

import { type Ring, SPARK_POINTS } from "./cluster";

export const SPARK_WIDTH = 90;
export const SPARK_HEIGHT = 20;

export function makeSparkCanvas(): HTMLCanvasElement {
  const canvas = document.createElement("canvas");
  const ratio = Math.min(window.devicePixelRatio || 1, 2);
  canvas.width = SPARK_WIDTH * ratio;
  canvas.height = SPARK_HEIGHT * ratio;
  canvas.style.width = `${SPARK_WIDTH}px`;
  canvas.style.height = `${SPARK_HEIGHT}px`;
  canvas.className = "spark";
  const context = canvas.getContext("2d");
  context?.scale(ratio, ratio);
  return canvas;
}

function yOf(value: number): number {
  return SPARK_HEIGHT - 1 - (Math.min(Math.max(value, 0), 100) / 100) * (SPARK_HEIGHT - 2);
}

function line(context: CanvasRenderingContext2D, ring: Ring, color: string): void {
  // Until the ring is full the samples it has span the width (the shape shows at once);
  // a single sample is a level line.
  let count = 0;
  for (let i = 0; i < SPARK_POINTS; i++) if (!Number.isNaN(ring.values[i])) count++;
  if (count === 0) return;
  const step = SPARK_WIDTH / Math.max(count - 1, 1);
  context.beginPath();
  let k = 0;
  for (let i = 0; i < SPARK_POINTS; i++) {
    const value = ring.values[(ring.head + i) % SPARK_POINTS];
    if (Number.isNaN(value)) continue;
    if (k === 0) context.moveTo(0, yOf(value));
    if (count === 1) context.lineTo(SPARK_WIDTH, yOf(value));
    else if (k > 0) context.lineTo(k * step, yOf(value));
    k++;
  }
  context.strokeStyle = color;
  context.stroke();
}

export function drawSparkline(canvas: HTMLCanvasElement, cpu: Ring, memory: Ring): void {
  const context = canvas.getContext("2d");
  if (context === null) return;
  context.clearRect(0, 0, SPARK_WIDTH, SPARK_HEIGHT);
  context.lineWidth = 1;
  line(context, memory, "#8e6bd8");
  line(context, cpu, "#1f8fd6");
}
